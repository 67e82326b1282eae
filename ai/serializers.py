"""The body of a streaming chat request."""

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


class ChatRequestSerializer(serializers.Serializer):
    message = JSONStringField(
        help_text="The user's message; trimmed, then 1 … AI_MAX_MESSAGE_CHARS characters."
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
        return attrs
