"""The spec's `AIGenerationService`: the database side of an answer, from its first write to its last.

`stream_start()` does the checks and the writes that must be committed before the first byte is sent;
`answer_renew()` is the heartbeat of a running answer and `answer_finish()` writes its end, once;
`streams_sweep()` cleans up after answers whose server process died. The generation itself, the task
that asks the adapter and keeps the answer's events, is in `ai.generations`.
"""

import asyncio
import functools
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from ai.adapters.base import ChatMessage, Usage
from chatsvc import rows
from conversations import services as conversation_services
from conversations.models import Conversation, Message
from quota import services as quota_services

logger = logging.getLogger("ai.stream")


class AdapterNotConfigured(Exception):
    """The conversation's adapter alias is no longer in `AI_ADAPTERS`."""

    def __init__(self, alias: str) -> None:
        super().__init__(f"The AI adapter {alias!r} of this conversation is not configured.")
        self.alias = alias


class IdempotencyKeyMismatch(Exception):
    """An `Idempotency-Key` already used by the caller for a request with another body."""


@dataclass
class StreamStart:
    """What `stream_start()` committed, and what the generation needs to go on without the database."""

    user: AbstractBaseUser
    conversation_id: uuid.UUID
    question_id: uuid.UUID
    answer_id: uuid.UUID
    reservation_id: str
    adapter_alias: str
    context: list[ChatMessage]


@dataclass(frozen=True)
class Retry:
    """An idempotent retry: the answer the first request with this key started."""

    answer_id: uuid.UUID


def request_fingerprint(**body) -> str:
    """The hash of a stream request's body, as an `Idempotency-Key` compares it."""
    canonical = json.dumps({name: str(value) if value is not None else None for name, value in body.items()})
    return hashlib.sha256(canonical.encode()).hexdigest()


def stream_start(
    *,
    user,
    message: str = "",
    conversation_id=None,
    adapter: str | None = None,
    regenerate: bool = False,
    create_missing: bool = False,
    idempotency_key: str | None = None,
    only_if: rows.Condition | None = None,
) -> StreamStart | Retry:
    """Check and write everything an answer needs, in one transaction; then hand the connection back.

    With `idempotency_key`, a request that repeats an earlier one (same key, same body) starts nothing
    and returns `Retry`; the same key with another body raises `IdempotencyKeyMismatch`. With
    `create_missing`, a `conversation_id` that does not exist yet starts a conversation with that id.
    With `only_if` (a start's remembered token still valid), nothing is started unless it holds when the
    answer is reserved. Raises `Conversation.DoesNotExist` (not the caller's), `StreamInProgress`,
    `NothingToRegenerate`, `AdapterNotConfigured`, `QuotaExceeded`, `ConditionFailed` (`only_if`).
    """
    try:
        started = _start(
            user, message, conversation_id, adapter, regenerate, create_missing, idempotency_key, only_if
        )
    finally:
        # The answer may last minutes: thousands of them must not hold thousands of connections.
        connection.close()
    if isinstance(started, StreamStart) and settings.AI_SYSTEM_PROMPT:
        started.context.insert(0, {"role": "system", "content": settings.AI_SYSTEM_PROMPT})
    return started


def _start(user, message, conversation_id, adapter, regenerate, create_missing, idempotency_key, only_if):
    key = fingerprint = None
    if idempotency_key is not None:
        key = f"{user.pk}:{idempotency_key}"
        fingerprint = request_fingerprint(
            message=message, conversation_id=conversation_id, adapter=adapter, regenerate=regenerate
        )
        if retry := _retry_of(key, fingerprint):
            return retry
    _sweep_now_and_then()
    try:
        with transaction.atomic():
            conversation, new = _claim_conversation(user, message, conversation_id, adapter, create_missing)
            if key and (retry := _retry_of(key, fingerprint)):
                # The racing first request committed while this one waited for the row: keep nothing
                # of this one (a conversation it may have created).
                transaction.set_rollback(True)
                return retry
            if not new:
                conversation_services.conversation_ensure_idle(conversation_id=conversation.pk)
            if conversation.adapter not in settings.AI_ADAPTERS:
                raise AdapterNotConfigured(conversation.adapter)
            exchange_options = {
                "conversation": conversation,
                "context_limit": settings.AI_CONTEXT_MESSAGES,
                "idempotency_key": key,
                "fingerprint": fingerprint or "",
            }
            if regenerate:
                reservation = quota_services.quota_reserve(user=user, only_if=only_if)
                exchange = conversation_services.exchange_regenerate(**exchange_options)
            else:
                # The exchange's writes are made with the reservation, in its statement, which ends the
                # transaction: one round trip on PostgreSQL.
                exchange = conversation_services.exchange_start(
                    content=message, new_conversation=new, store=False, **exchange_options
                )
                # Not after `create_missing` stored the conversation: a refusal would keep it.
                created_here = new and not conversation._state.adding
                reservation = quota_services.quota_reserve(
                    user=user, along=exchange.rows, end=not created_here, only_if=only_if
                )
    except IntegrityError:
        if key and (retry := _retry_of(key, fingerprint)):
            return retry  # a racing request with the same key won
        raise
    return StreamStart(
        user=user,
        conversation_id=conversation.pk,
        question_id=exchange.question.pk,
        answer_id=exchange.answer.pk,
        reservation_id=reservation.pk,
        adapter_alias=conversation.adapter,
        context=exchange.context,
    )


def _claim_conversation(user, message, conversation_id, adapter, create_missing) -> tuple[Conversation, bool]:
    """The conversation of a new exchange (its row locked, or a draft), and whether it is new."""
    if conversation_id is not None:
        try:
            return conversation_services.conversation_for_exchange(
                user=user, conversation_id=conversation_id
            ), False
        except Conversation.DoesNotExist:
            if not create_missing:
                raise
    new = {
        "user": user,
        "adapter": adapter or settings.AI_DEFAULT_ADAPTER,
        "title": conversation_services.title_from_message(message),
    }
    if conversation_id is None:  # stored with its first exchange
        return conversation_services.conversation_draft(**new), True
    try:
        with transaction.atomic():
            return conversation_services.conversation_create(**new, id=conversation_id), True
    except IntegrityError:
        raise Conversation.DoesNotExist from None  # another user's, or created by a racing request


def _retry_of(key: str, fingerprint: str) -> Retry | None:
    found = conversation_services.answer_for_idempotency_key(key=key, ttl=settings.AI_IDEMPOTENCY_TTL)
    if found is None:
        return None
    answer, first_fingerprint = found
    if first_fingerprint != fingerprint:
        raise IdempotencyKeyMismatch
    return Retry(answer_id=answer.pk)


def _on_a_connection_of_its_own(work):
    """Run `work()` on a short-lived connection, from async code.

    Not thread-sensitive: a generation outlives the request that started it, and must not hold (or
    wait for) that request's thread; each call takes a pooled connection and gives it back.
    """

    def run():
        try:
            return work()
        finally:
            connection.close()

    return sync_to_async(run, thread_sensitive=False)()


async def _retrying(work):
    """`_on_a_connection_of_its_own(work)`, tried again with backoff for up to `DATABASE_RETRY_SECONDS`
    while the database cannot be reached (a restart, a failover). Only connection errors are retried —
    never an integrity error, never a statement the database refused. `work(retry=True)` on a retry: its
    first attempt may have committed just before the connection broke."""
    deadline = time.monotonic() + settings.DATABASE_RETRY_SECONDS
    delay, retry = 0.1, False
    while True:
        try:
            return await _on_a_connection_of_its_own(functools.partial(work, retry=retry))
        except (OperationalError, InterfaceError):
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("database unreachable; trying again in %.1f s", delay)
        await asyncio.sleep(delay)
        delay, retry = min(delay * 2, 2.0), True


async def answer_renew(start: StreamStart, content: str) -> None:
    """Renew the reservation and the answer's heartbeat, saving the text so far (its `content` may
    lag behind the chunks sent, never run ahead of them)."""

    def work(retry: bool):
        with transaction.atomic():
            quota_services.quota_renew(reservation_id=start.reservation_id)
            conversation_services.message_heartbeat(message_id=start.answer_id, content=content)

    await _retrying(work)


def answer_finish(
    start: StreamStart, *, content: str, status: str, usage: Usage | None, error=None
) -> Awaitable[tuple[bool, dict | None]]:
    """Write the answer's end and settle its reservation, at once (one statement on PostgreSQL).

    Returns (written, quota): `written` is False when the end had been written already (the sweep
    marked the answer interrupted meanwhile); `quota` is the `done` event's quota after a charge.
    Complete and stopped answers are charged; interrupted ones only under `QUOTA_CHARGE_INTERRUPTED`.
    """
    charge = status in (Message.Status.COMPLETE, Message.Status.STOPPED) or (
        status == Message.Status.INTERRUPTED and settings.QUOTA_CHARGE_INTERRUPTED
    )
    end = {
        "content": content,
        "status": status,
        "usage": usage_dict(usage) if usage else None,
        "error_code": error.code if error else "",
        "error_message": error.message if error else "",
    }

    def work(retry: bool):
        written, status_after = quota_services.quota_settle(
            reservation_id=start.reservation_id,
            tokens=usage.total_tokens if usage else 0,
            charge=charge,
            provided=conversation_services.message_finish(message_id=start.answer_id, **end),
        )
        if not written and retry and _ended_as(start.answer_id, status):
            # The attempt before this one committed (its answer was lost with the connection): the
            # end and the quota were written once, by it.
            return True, quota_services.quota_status(user=start.user).stream_quota if charge else None
        return written, status_after.stream_quota if status_after else None

    return _retrying(work)


def _ended_as(answer_id, status: str) -> bool:
    return Message.objects.filter(pk=answer_id, status=status).exists()


def usage_dict(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


_last_sweep = time.monotonic()


def _sweep_now_and_then() -> None:
    """Sweep at most every `QUOTA_RESERVATION_TTL / 3` seconds while streams start, so what a crashed
    process left behind is cleaned up even when its successor started before that had expired."""
    global _last_sweep
    if time.monotonic() - _last_sweep >= settings.QUOTA_RESERVATION_TTL / 3:
        _last_sweep = time.monotonic()
        streams_sweep()


def streams_sweep(*, now=None) -> tuple[int, int]:
    """Delete expired reservations and mark answers whose stream is gone as interrupted.

    Returns (reservations deleted, messages interrupted). Runs at server start, every
    `QUOTA_RESERVATION_TTL / 3` while streams start, and as `manage.py sweep_streams`.
    """
    now = now or timezone.now()
    reservations = quota_services.reservations_sweep(now=now)
    messages = conversation_services.messages_sweep_stale(
        updated_before=now - timedelta(seconds=settings.QUOTA_RESERVATION_TTL)
    )
    return reservations, messages
