"""The rules for writing conversations and messages (reads that need care are in selectors.py).

Plain synchronous functions: async callers wrap a whole unit of work in one `sync_to_async` call.
"""

from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from conversations.models import Conversation, Message

TITLE_MAX_CHARS = 60


class StreamInProgress(Exception):
    """The conversation has an answer that is still streaming."""


def title_from_message(content: str) -> str:
    """The first line of a message, whitespace collapsed, cut to 60 characters with an ellipsis."""
    first_line = content.strip().split("\n", 1)[0]
    title = " ".join(first_line.split())
    if len(title) > TITLE_MAX_CHARS:
        title = title[: TITLE_MAX_CHARS - 1] + "…"
    return title


def conversation_create(*, user, adapter: str, title: str = "") -> Conversation:
    return Conversation.objects.create(user=user, adapter=adapter, title=title)


def conversation_update(*, conversation: Conversation, **fields) -> Conversation:
    """Change `title` and/or `adapter`; `updated_at` moves."""
    for name, value in fields.items():
        setattr(conversation, name, value)
    conversation.save(update_fields=[*fields, "updated_at"])
    return conversation


@transaction.atomic
def conversation_delete(*, conversation: Conversation) -> None:
    """Delete a conversation and its messages, unless one of its answers is streaming."""
    locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
    if locked.messages.filter(status=Message.Status.STREAMING).exists():
        raise StreamInProgress
    locked.delete()


def exchange_start(*, conversation: Conversation, content: str) -> tuple[Message, Message]:
    """Add a user message and its (empty, streaming) answer; the conversation's `updated_at` moves.

    Call inside the caller's transaction: it is one part of starting a stream.
    """
    now = timezone.now()
    question, answer = Message.objects.bulk_create(
        [
            Message(
                conversation=conversation,
                role=Message.Role.USER,
                content=content,
                created_at=now,
                updated_at=now,
                position=0,
            ),
            Message(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                status=Message.Status.STREAMING,
                created_at=now,
                updated_at=now,
                position=1,
            ),
        ]
    )
    changes = {"updated_at": now}
    if not conversation.title:
        changes["title"] = title_from_message(content)
    Conversation.objects.filter(pk=conversation.pk).update(**changes)
    for name, value in changes.items():
        setattr(conversation, name, value)
    return question, answer


def message_finish(
    *,
    message_id,
    content: str,
    status: str,
    usage: dict | None = None,
    error_code: str = "",
    error_message: str = "",
) -> None:
    """Write an answer's final content, status, usage and error; it leaves `streaming` only here."""
    usage = usage or {}
    Message.objects.filter(pk=message_id).update(
        content=content,
        status=status,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        total_tokens=usage.get("total_tokens"),
        error_code=error_code,
        error_message=error_message,
        updated_at=timezone.now(),
    )


def message_heartbeat(*, message_id, content: str) -> None:
    """Renew a streaming answer (and save the text so far), so the sweep knows its stream is alive."""
    Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
        content=content, updated_at=timezone.now()
    )


def messages_sweep_stale(*, updated_before: datetime) -> int:
    """Mark answers left `streaming` and not renewed since `updated_before` as interrupted."""
    return Message.objects.filter(
        Q(status=Message.Status.STREAMING) & Q(updated_at__lt=updated_before)
    ).update(status=Message.Status.INTERRUPTED, updated_at=timezone.now())
