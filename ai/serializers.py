"""The body and headers of a streaming chat request."""

import re

from django.conf import settings
from rest_framework import serializers

from chatsvc.api import JSONStringField
from conversations.api.serializers import validate_adapter_alias


class StrictUUIDField(serializers.UUIDField):
    """A UUIDField that takes only JSON strings (DRF's own also takes integers)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A BooleanField that takes only JSON `true` and `false` (DRF's own also takes "yes", 1…)."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class ChatRequestSerializer(serializers.Serializer):
    message = JSONStringField(
        required=False,
        help_text="The user's message; trimmed, then 1 … AI_MAX_MESSAGE_CHARS characters. "
        "Required unless `regenerate`.",
    )
    conversation_id = StrictUUIDField(
        required=False,
        allow_null=True,
        help_text="A conversation of the caller's; omitted or null starts one.",
    )
    adapter = JSONStringField(
        required=False,
        validators=[validate_adapter_alias],
        help_text="An alias of AI_ADAPTERS, for a new conversation only.",
    )
    regenerate = StrictBooleanField(
        required=False,
        default=False,
        help_text="Answer the conversation's last user message again (its last answer is replaced).",
    )

    def validate_message(self, value: str) -> str:
        limit = settings.AI_MAX_MESSAGE_CHARS
        if len(value) > limit:
            raise serializers.ValidationError(f"Ensure this field has no more than {limit} characters.")
        return value

    def validate(self, attrs):
        if attrs.get("conversation_id") and "adapter" in attrs:
            raise serializers.ValidationError(
                {"adapter": ["A conversation keeps its adapter: give `adapter` only for a new conversation."]}
            )
        if attrs["regenerate"]:
            if not attrs.get("conversation_id"):
                raise serializers.ValidationError(
                    {"conversation_id": ["`regenerate` needs a conversation_id."]}
                )
            if "message" in attrs:
                raise serializers.ValidationError(
                    {"message": ["`regenerate` answers again: send no message."]}
                )
        elif "message" not in attrs:
            raise serializers.ValidationError(
                {"message": [serializers.Field.default_error_messages["required"]]}
            )
        return attrs


IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")


def idempotency_key(request) -> str | None:
    """The request's `Idempotency-Key` header (None without one), or a 400 naming `idempotency_key`."""
    key = request.META.get("HTTP_IDEMPOTENCY_KEY")  # not `request.headers`: it copies every header first
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise serializers.ValidationError(
            {"idempotency_key": ["An Idempotency-Key is 1 … 255 printable ASCII characters."]}
        )
    return key


def last_event_id(request) -> int:
    """The `Last-Event-ID` header, or `?last_event_id=` (0 without either), or a 400."""
    raw = request.META.get("HTTP_LAST_EVENT_ID", request.GET.get("last_event_id", "0"))
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise serializers.ValidationError({"last_event_id": ["A Last-Event-ID is a whole number ≥ 0."]})
    return int(raw)
