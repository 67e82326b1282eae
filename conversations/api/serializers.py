"""JSON shapes of conversations and messages."""

from django.conf import settings
from rest_framework import serializers

from chatsvc.api import JSONStringField
from conversations.models import Conversation, Message


def validate_adapter_alias(value: str) -> str:
    """An alias of `AI_ADAPTERS` (read live, so a changed setting applies at once)."""
    if value not in settings.AI_ADAPTERS:
        known = ", ".join(sorted(settings.AI_ADAPTERS))
        raise serializers.ValidationError(f"Unknown adapter {value!r}; configured adapters: {known}.")
    return value


class ConversationSerializer(serializers.ModelSerializer):
    title = JSONStringField(max_length=200, required=False, allow_blank=True)
    adapter = JSONStringField(max_length=100, required=False, validators=[validate_adapter_alias])

    class Meta:
        model = Conversation
        fields = ["id", "title", "adapter", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]


class UsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class MessageSerializer(serializers.ModelSerializer):
    usage = UsageSerializer(read_only=True, allow_null=True)
    error = ErrorSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Message
        fields = ["id", "role", "content", "status", "created_at", "usage", "error"]
        read_only_fields = fields
