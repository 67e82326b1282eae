"""The AI SDK's requests: its chat ids, the body of `POST /api/ai/chat` and the WebSocket request frames.

A chat id is a conversation's UUID, or an id the AI SDK made, which names the caller's conversation
`uuid5(CHAT_ID_NAMESPACE, "<user pk>:<id>")` (API.md, "AI SDK clients"): two users' chats never share one.
"""

import re
import uuid

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chatsvc.api import JSONStringField
from conversations.api.serializers import UsageSerializer, validate_adapter_alias

CHAT_ID_NAMESPACE = uuid.UUID("6f1d6b8e-6a3c-4d21-9a47-1d0c8e1b7a52")
CHAT_ID_PATTERN = r"[A-Za-z0-9_-]{1,100}"
# `stream` would be read as `/api/ai/chat/stream`, the contract's own streaming endpoint.
RESERVED_CHAT_IDS = frozenset({"stream"})
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
TRIGGERS = ("submit-message", "regenerate-message")


def conversation_id_for(*, user, chat_id: str) -> uuid.UUID:
    """The id of the conversation the chat `chat_id` of `user` names (it may not exist yet)."""
    if _UUID.fullmatch(chat_id):
        return uuid.UUID(chat_id)
    return uuid.uuid5(CHAT_ID_NAMESPACE, f"{user.pk}:{chat_id}")


def validate_chat_id(value: str) -> str:
    if not re.fullmatch(CHAT_ID_PATTERN, value) or value in RESERVED_CHAT_IDS:
        raise serializers.ValidationError(
            "A chat id is a UUID or 1 … 100 characters of A-Z, a-z, 0-9, _ and - (not `stream`)."
        )
    return value


def user_message_text(messages: list) -> str:
    """The text of the `text` parts of the last UI message, which must be a user's; trimmed and checked
    as the contract's `message` is (1 … AI_MAX_MESSAGE_CHARS characters, no NUL)."""
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "user":
        raise serializers.ValidationError("The last message must be a user's message.")
    parts = last.get("parts")
    if not isinstance(parts, list) or not all(isinstance(part, dict) for part in parts):
        raise serializers.ValidationError("The last message's `parts` must be a list of objects.")
    texts = [part.get("text") for part in parts if part.get("type") == "text"]
    if not texts or not all(isinstance(text, str) for text in texts):
        raise serializers.ValidationError("The last message must have a `text` part holding a string.")
    text = "\n".join(texts).strip()
    limit = settings.AI_MAX_MESSAGE_CHARS
    if not text:
        raise serializers.ValidationError("The last message's text may not be blank.")
    if len(text) > limit:
        raise serializers.ValidationError(f"Ensure the message has no more than {limit} characters.")
    if "\x00" in text:
        raise serializers.ValidationError("Null characters are not allowed.")
    return text


class UIChatRequestSerializer(serializers.Serializer):
    """The body `DefaultChatTransport` sends (`WebSocketChatTransport`'s `send` frame carries the same).

    Validated data: `conversation_id` (of `context["user"]`'s chat) and `chat_id`, `message` (None for a
    regenerate), `regenerate`, and `adapter` when given.
    """

    id = JSONStringField(
        trim_whitespace=False, validators=[validate_chat_id], help_text="The chat: a UUID or an AI SDK id."
    )
    messages = serializers.ListField(
        child=serializers.JSONField(),
        help_text="The chat's UI messages; only the last one (the user's new message) is read.",
    )
    trigger = serializers.ChoiceField(choices=TRIGGERS)
    messageId = JSONStringField(required=False, allow_null=True, allow_blank=True)
    adapter = JSONStringField(
        required=False,
        validators=[validate_adapter_alias],
        help_text="An alias of AI_ADAPTERS, for a new chat.",
    )

    def validate(self, attrs):
        regenerate = attrs["trigger"] == "regenerate-message"
        message = None
        if not regenerate:
            try:
                message = user_message_text(attrs["messages"])
            except serializers.ValidationError as error:
                raise serializers.ValidationError({"messages": error.detail}) from None
        validated = {
            "chat_id": attrs["id"],
            "conversation_id": conversation_id_for(user=self.context["user"], chat_id=attrs["id"]),
            "message": message,
            "regenerate": regenerate,
        }
        if "adapter" in attrs:
            validated["adapter"] = attrs["adapter"]
        return validated


class InvalidFrame(Exception):
    """A WebSocket frame that is not a valid request; `request_id` when it names one."""

    def __init__(self, message: str, request_id: str | None = None):
        super().__init__(message)
        self.request_id = request_id


def _is_sequence(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def request_frame(frame) -> dict:
    """`frame` when it is a request of `WebSocketChatTransport`, checked as the AI SDK's own
    `safeValidateWebSocketChatTransportRequest` checks it; `InvalidFrame` otherwise. (The UI messages of a
    `send` are checked by `UIChatRequestSerializer`: only the last one is read.)"""
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise InvalidFrame("Invalid WebSocket chat request frame.")
    request_id = frame.get("requestId") if isinstance(frame.get("requestId"), str) else None
    if frame["type"] == "abort":
        if request_id is None:
            raise InvalidFrame("Invalid WebSocket chat abort request.")
        return frame
    headers, body = frame.get("headers"), frame.get("body")
    if (
        request_id is None
        or not isinstance(frame.get("id"), str)
        or not isinstance(headers, dict)
        or not all(isinstance(value, str) for value in headers.values())
        or not isinstance(body, dict)
    ):
        raise InvalidFrame("Invalid WebSocket chat request frame.", request_id)
    if frame["type"] == "resume":
        if "lastSequence" in frame and not _is_sequence(frame["lastSequence"]):
            raise InvalidFrame("Invalid WebSocket chat resume sequence.", request_id)
        return frame
    if (
        frame["type"] != "send"
        or frame.get("trigger") not in TRIGGERS
        or ("messageId" in frame and not isinstance(frame["messageId"], str))
    ):
        raise InvalidFrame("Invalid WebSocket chat send request.", request_id)
    return frame


class UITextPartSerializer(serializers.Serializer):
    type = serializers.CharField(default="text")
    text = serializers.CharField()


class UIMessageMetadataSerializer(serializers.Serializer):
    status = serializers.CharField()
    createdAt = serializers.DateTimeField(source="created_at")
    usage = UsageSerializer(allow_null=True)


class UIMessageSerializer(serializers.Serializer):
    """A stored message as the AI SDK's `UIMessage`: its text as one `text` part (none when empty)."""

    id = serializers.UUIDField()
    role = serializers.CharField()
    parts = serializers.SerializerMethodField()
    metadata = UIMessageMetadataSerializer(source="*")

    @extend_schema_field(UITextPartSerializer(many=True))
    def get_parts(self, message) -> list[dict]:
        return [{"type": "text", "text": message.content}] if message.content else []


class UIChatSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The chat id, as given.")
    messages = UIMessageSerializer(many=True)
