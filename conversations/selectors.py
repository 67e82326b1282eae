"""Reads of conversations and messages that need care: ownership, order and the context window."""

from django.db.models import Count, QuerySet

from conversations.models import Conversation, Message


def conversation_list(*, user) -> QuerySet[Conversation]:
    """The user's conversations, most recently updated first."""
    return Conversation.objects.filter(user=user).order_by("-updated_at", "-created_at", "id")


def conversation_get(*, user, conversation_id) -> Conversation:
    """One of the user's conversations; another user's raises `DoesNotExist`, as a missing one does."""
    return Conversation.objects.get(user=user, pk=conversation_id)


def message_list(*, conversation: Conversation) -> QuerySet[Message]:
    """A conversation's messages, oldest first, a question always before its answer."""
    return conversation.messages.order_by("created_at", "position")


def conversation_context(*, conversation_id, limit: int) -> list[dict]:
    """The last `limit` messages with content, oldest first, as `{"role", "content"}`."""
    newest = (
        Message.objects.filter(conversation_id=conversation_id)
        .exclude(content="")
        .order_by("-created_at", "-position")
        .values("role", "content")[:limit]
    )
    return list(reversed(newest))


def conversations_with_message_count() -> QuerySet[Conversation]:
    """Every conversation, with its owner and `message_count`, for the admin."""
    return Conversation.objects.select_related("user").annotate(message_count=Count("messages"))
