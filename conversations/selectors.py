"""Reads of conversations and messages that need care: ownership, order, the admin's counts."""

import functools

from django.db import connection
from django.db.models import Count, Q, QuerySet

from chatsvc import rows
from conversations.models import Conversation, Message
from conversations.services import live_streams


def conversation_list(*, user) -> QuerySet[Conversation]:
    """The user's conversations, most recently updated first."""
    return Conversation.objects.filter(user=user).order_by("-updated_at", "-created_at", "id")


def message_list(*, conversation: Conversation) -> QuerySet[Message]:
    """A conversation's messages, oldest first, a question always before its answer."""
    return conversation.messages.order_by("created_at", "position")


def conversations_with_message_count() -> QuerySet[Conversation]:
    """Every conversation, with its owner and `message_count`, for the admin."""
    return Conversation.objects.select_related("user").annotate(message_count=Count("messages"))


def answer_of(*, user, message_id) -> Message:
    """One of the user's assistant messages; `Message.DoesNotExist` for a missing one, another user's
    or a user message. In one cached statement (`chatsvc.rows`): every reader's reattach reads it, and
    the ORM's compilation of the join cost more CPU than the rest of the request."""
    params = [Message._meta.pk.get_db_prep_value(message_id, connection), Message.Role.ASSISTANT, user.pk]
    answer = rows.fetch(Message, _answer_of_user(), params)
    if answer is None:
        raise Message.DoesNotExist(f"No answer {message_id} of user {user.pk}.")
    return answer


@functools.cache
def _answer_of_user() -> str:
    messages, conversations = Message._meta, Conversation._meta
    column = messages.get_field("conversation").column
    return (
        f"SELECT {rows.columns(Message, messages.db_table)} FROM {messages.db_table} "
        f"JOIN {conversations.db_table} "
        f"ON {conversations.db_table}.{conversations.pk.column} = {messages.db_table}.{column} "
        f"WHERE {messages.db_table}.{messages.pk.column} = %s "
        f"AND {messages.db_table}.{messages.get_field('role').column} = %s "
        f"AND {conversations.db_table}.{conversations.get_field('user').column} = %s"
    )


def running_answer(*, user, conversation_id) -> Message | None:
    """The answer the user's conversation is generating now (`streaming` and still renewed), if any."""
    return (
        Message.objects.filter(
            live_streams(),
            conversation_id=conversation_id,
            conversation__user=user,
            role=Message.Role.ASSISTANT,
        )
        .order_by("-created_at", "-position")
        .first()
    )


def question_of(*, answer: Message) -> Message | None:
    """The user message an answer answers: the conversation's last one before it."""
    return (
        Message.objects.filter(
            Q(created_at__lt=answer.created_at)
            | Q(created_at=answer.created_at, position__lt=answer.position),
            conversation_id=answer.conversation_id,
            role=Message.Role.USER,
        )
        .order_by("-created_at", "-position")
        .first()
    )
