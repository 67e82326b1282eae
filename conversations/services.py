"""The rules for writing conversations and messages (reads that need care are in selectors.py).

Plain synchronous functions: async callers wrap a whole unit of work in one `sync_to_async` call.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from chatsvc import rows
from conversations.models import Conversation, Message

TITLE_MAX_CHARS = 60


class StreamInProgress(Exception):
    """The conversation has an answer that is still streaming."""


class NothingToRegenerate(Exception):
    """A conversation asked to answer again has no user message."""


def title_from_message(content: str) -> str:
    """The first line of a message, whitespace collapsed, cut to 60 characters with an ellipsis."""
    first_line = content.strip().split("\n", 1)[0]
    title = " ".join(first_line.split())
    if len(title) > TITLE_MAX_CHARS:
        title = title[: TITLE_MAX_CHARS - 1] + "…"
    return title


def conversation_create(*, user, adapter: str, title: str = "", id=None) -> Conversation:
    """A new conversation; `id` picks its UUID (an AI SDK chat's), an existing one raises IntegrityError."""
    conversation = conversation_draft(user=user, adapter=adapter, title=title, **({"id": id} if id else {}))
    rows.insert(conversation)  # on every new chat's start: `create()` without the ORM's compilation
    return conversation


def conversation_draft(*, user, adapter: str, title: str = "", **fields) -> Conversation:
    """A new conversation not stored yet: `exchange_start` stores it with its first exchange, in one
    statement on PostgreSQL."""
    return Conversation(user=user, adapter=adapter, title=title, **fields)


def conversation_update(*, conversation: Conversation, **fields) -> Conversation:
    """Change `title` and/or `adapter`; `updated_at` moves."""
    for name, value in fields.items():
        setattr(conversation, name, value)
    conversation.save(update_fields=[*fields, "updated_at"])
    return conversation


def live_streams() -> Q:
    """Answers still streaming: left `streaming` and renewed within `QUOTA_RESERVATION_TTL` (a stream
    whose process died stops being renewed, and is no longer live, before the sweep marks it)."""
    renewed_since = timezone.now() - timedelta(seconds=settings.QUOTA_RESERVATION_TTL)
    return Q(status=Message.Status.STREAMING, updated_at__gte=renewed_since)


@transaction.atomic
def conversation_delete(*, conversation: Conversation) -> None:
    """Delete a conversation and its messages, unless one of its answers is still streaming."""
    locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
    if locked.messages.filter(live_streams()).exists():
        raise StreamInProgress
    locked.delete()


def conversation_ensure_idle(*, conversation_id) -> None:
    """Raise `StreamInProgress` when the conversation has a live answer. Called inside the transaction
    that locked the conversation's row (`conversation_for_exchange`), so one answer runs at a time."""
    if Message.objects.filter(live_streams(), conversation_id=conversation_id).exists():
        raise StreamInProgress


def conversation_for_exchange(*, user, conversation_id) -> Conversation:
    """One of the user's conversations, about to get a new exchange, its row locked until the caller's
    transaction ends (one exchange at a time: `conversation_ensure_idle`). Another user's conversation
    raises `Conversation.DoesNotExist`, as a missing one does. Its exchange moves its `updated_at` and
    fills an empty title (`exchange_start`, `exchange_regenerate`). Call inside the caller's transaction.
    (Plain SQL: the ORM's `select_for_update().get()` compiles its query anew each time.)"""
    lock = (
        f" {connection.ops.for_update_sql(no_key=True)}" if connection.features.has_select_for_update else ""
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT title, adapter FROM conversations_conversation WHERE id = %s AND user_id = %s{lock}",
            [Conversation._meta.pk.get_db_prep_value(conversation_id, connection), user.pk],
        )
        row = cursor.fetchone()
    if row is None:
        raise Conversation.DoesNotExist
    title, adapter = row
    conversation = Conversation(id=conversation_id, user=user, title=title, adapter=adapter)
    conversation._state.adding = False  # a stored row, not a draft (`exchange_start` stores drafts)
    return conversation


def _touch(conversation: Conversation, content: str, now: datetime) -> rows.Write:
    """The write of a stored conversation's new exchange: `updated_at` moves to `now`; an empty title is
    filled from `content` (the conversation's first message)."""
    title = title_from_message(content)
    conversation.updated_at, conversation.title = now, conversation.title or title
    return rows.Write(
        _TOUCH_SQL,
        [
            connection.ops.adapt_datetimefield_value(now),
            title,
            Conversation._meta.pk.get_db_prep_value(conversation.pk, connection),
        ],
    )


_TOUCH_SQL = (
    "UPDATE conversations_conversation "
    "SET updated_at = %s, title = CASE WHEN title = '' THEN %s ELSE title END WHERE id = %s"
)


@dataclass(frozen=True)
class Exchange:
    """A question, its (empty, streaming) answer, the context to send for it, and what it writes: the
    rows it adds (`rows.insert`'s), the touch of a stored conversation among them."""

    question: Message
    answer: Message
    context: list[dict]
    rows: tuple[Conversation | Message | rows.Write, ...]


def exchange_start(
    *,
    conversation: Conversation,
    content: str,
    context_limit: int,
    new_conversation: bool = False,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    store: bool = True,
) -> Exchange:
    """Add a user message and its empty, streaming answer, and read the context to send for them.

    The context is the conversation's last `context_limit` messages with content, oldest first, the
    new question last (a new conversation has no earlier ones to read). Call inside the caller's
    transaction: it is one part of starting a stream. A conversation not stored yet (a draft) is stored
    with the two messages; a stored one is touched (`updated_at`, an empty title). The
    `idempotency_key` is kept with the question; one taken already raises `IntegrityError` (the
    caller's transaction is then lost: the racing request won). With `store=False` the caller writes
    `exchange.rows` (the stream's start, with its reservation: `quota_reserve(along=…)`).
    """
    earlier = []
    if not new_conversation and context_limit > 1:
        earlier = _recent(conversation_id=conversation.pk, limit=context_limit - 1)
    now = timezone.now()
    question, answer = (
        Message(
            conversation=conversation,
            role=Message.Role.USER,
            content=content,
            created_at=now,
            updated_at=now,
            position=0,
            idempotency_key=idempotency_key,
            idempotency_fingerprint=fingerprint,
        ),
        _new_answer(conversation, now, position=1),
    )
    if conversation._state.adding:
        added = (conversation, question, answer)
    else:
        added = (question, answer, _touch(conversation, content, now))
    if store:
        rows.insert(*added)
    context = [{"role": role, "content": text} for role, text in reversed(earlier)]
    if context_limit > 0:
        context.append({"role": question.role, "content": content})
    return Exchange(question=question, answer=answer, context=context, rows=added)


def exchange_regenerate(
    *,
    conversation: Conversation,
    context_limit: int,
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> Exchange:
    """Answer the conversation's last user message again: its last answer, when it is the last
    message, is deleted (it is replaced, not sent as context), and a new streaming answer added.

    Raises `NothingToRegenerate` when there is no user message. Call inside the caller's transaction,
    after `conversation_ensure_idle`. A regenerate adds no question: its `idempotency_key` is kept with
    its answer.
    """
    rows.run(_touch(conversation, "", timezone.now()))
    last = (
        Message.objects.filter(conversation_id=conversation.pk).order_by("-created_at", "-position").first()
    )
    if last is not None and last.role == Message.Role.ASSISTANT:
        last.delete()
    question = (
        Message.objects.filter(conversation_id=conversation.pk, role=Message.Role.USER)
        .order_by("-created_at", "-position")
        .first()
    )
    if question is None:
        raise NothingToRegenerate
    earlier = _recent(conversation_id=conversation.pk, limit=context_limit) if context_limit > 0 else []
    answer = _new_answer(conversation, timezone.now(), position=0)
    answer.idempotency_key, answer.idempotency_fingerprint = idempotency_key, fingerprint
    answer.save(force_insert=True)
    context = [{"role": role, "content": text} for role, text in reversed(earlier)]
    return Exchange(question=question, answer=answer, context=context, rows=(answer,))


def _recent(*, conversation_id, limit: int) -> list[tuple[str, str]]:
    """The conversation's last `limit` (role, content) pairs with content, newest first."""
    return list(
        Message.objects.filter(conversation_id=conversation_id)
        .exclude(content="")
        .order_by("-created_at", "-position")
        .values_list("role", "content")[:limit]
    )


def _new_answer(conversation, now, *, position: int) -> Message:
    return Message(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        created_at=now,
        updated_at=now,
        position=position,
    )


def answer_for_idempotency_key(*, key: str, ttl: float) -> tuple[Message, str] | None:
    """The answer of the request made with `key` ("<user pk>:<key>") within the last `ttl` seconds, and
    that request's fingerprint; None when there is none.

    A submitted message keeps its key: its answer is the one after it (the latest, when it was
    regenerated); a regenerate's key is kept with its answer. A key older than `ttl`, or whose answer is
    gone, is given up (a new request may take it)."""
    keyed = Message.objects.filter(idempotency_key=key).first()
    if keyed is None:
        return None
    answer = keyed
    if keyed.role == Message.Role.USER:
        answer = (
            Message.objects.filter(
                _after(keyed), conversation_id=keyed.conversation_id, role=Message.Role.ASSISTANT
            )
            .order_by("created_at", "position")
            .first()
        )
    if answer is None or keyed.created_at < timezone.now() - timedelta(seconds=ttl):
        Message.objects.filter(pk=keyed.pk).update(idempotency_key=None)
        return None
    return answer, keyed.idempotency_fingerprint


def _after(message: Message) -> Q:
    """Messages after `message` in its conversation's order."""
    return Q(created_at__gt=message.created_at) | Q(
        created_at=message.created_at, position__gt=message.position
    )


def message_finish(
    *,
    message_id,
    content: str,
    status: str,
    usage: dict | None = None,
    error_code: str = "",
    error_message: str = "",
) -> rows.Write:
    """The write of an answer's final content, status, usage and error, not run yet: it changes the row
    only while it is still `streaming`, so the end is written once (the owner, a stop and the sweep may
    race for it). Its caller runs it with the quota's settlement (`ai.services.answer_finish`)."""
    usage = usage or {}
    return rows.updating(
        Message,
        {"id": message_id, "status": Message.Status.STREAMING},
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
    live = {"id": message_id, "status": Message.Status.STREAMING}
    rows.update(Message, live, content=content, updated_at=timezone.now())


def messages_sweep_stale(*, updated_before: datetime) -> int:
    """Mark answers left `streaming` and not renewed since `updated_before` as interrupted."""
    return Message.objects.filter(
        Q(status=Message.Status.STREAMING) & Q(updated_at__lt=updated_before)
    ).update(status=Message.Status.INTERRUPTED, updated_at=timezone.now())
