"""The spec's `AIGenerationService`: one streaming chat request, from its first write to its last frame.

`stream_start()` does the checks and the writes that must be committed before the first byte is sent;
`generate_stream()` (the spec's `AIGenerationService.generate_stream`) is the async generator of SSE
frames that asks the adapter, renews the stream's heartbeat and writes the end, whatever the end is.
`streams_sweep()` cleans up after streams whose server process died.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from ai.adapters import adapters
from ai.adapters.base import AdapterError, ChatMessage, Finish, Usage
from ai.sse import KEEPALIVE, EventEncoder
from conversations import services as conversation_services
from conversations.models import Message
from quota import services as quota_services

logger = logging.getLogger("ai.stream")


class AdapterNotConfigured(Exception):
    """The conversation's adapter alias is no longer in `AI_ADAPTERS`."""

    def __init__(self, alias: str) -> None:
        super().__init__(f"The AI adapter {alias!r} of this conversation is not configured.")
        self.alias = alias


@dataclass(frozen=True)
class Failure:
    """Why a stream ended in an `error` event: an `AdapterError`, or a fault of chatsvc itself."""

    code: str
    message: str
    retryable: bool


NO_USAGE = Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
INTERNAL_ERROR = Failure(
    "internal_error", "Something went wrong on our side; the answer was not finished.", False
)


@dataclass
class StreamStart:
    """What `stream_start()` committed, and what the stream needs to go on without the database."""

    user: AbstractBaseUser
    conversation_id: uuid.UUID
    question_id: uuid.UUID
    answer_id: uuid.UUID
    reservation_id: str
    adapter_alias: str
    context: list[ChatMessage]


@dataclass
class _Progress:
    """The state of one stream, for its end and its log line."""

    parts: list[str] = field(default_factory=list)
    finish: Finish | None = None
    started: float = field(default_factory=time.monotonic)
    first_chunk_after: float | None = None

    @property
    def content(self) -> str:
        return "".join(self.parts)

    @property
    def usage(self) -> Usage | None:
        return self.finish.usage if self.finish else None


def stream_start(*, user, message: str, conversation_id=None, adapter: str | None = None) -> StreamStart:
    """Check and write everything a stream needs, in one transaction; then hand the connection back.

    Raises `Conversation.DoesNotExist` (not the caller's), `AdapterNotConfigured`, `QuotaExceeded`.
    """
    _sweep_now_and_then()
    with transaction.atomic():
        if conversation_id is None:
            conversation = conversation_services.conversation_create(
                user=user,
                adapter=adapter or settings.AI_DEFAULT_ADAPTER,
                title=conversation_services.title_from_message(message),
            )
        else:
            conversation = conversation_services.conversation_for_exchange(
                user=user, conversation_id=conversation_id, content=message
            )
        if conversation.adapter not in settings.AI_ADAPTERS:
            raise AdapterNotConfigured(conversation.adapter)
        reservation = quota_services.quota_reserve(user=user)
        exchange = conversation_services.exchange_start(
            conversation=conversation,
            content=message,
            context_limit=settings.AI_CONTEXT_MESSAGES,
            new_conversation=conversation_id is None,
        )
    # The stream may last minutes: thousands of open streams must not hold thousands of connections.
    connection.close()
    context = exchange.context
    if settings.AI_SYSTEM_PROMPT:
        context.insert(0, {"role": "system", "content": settings.AI_SYSTEM_PROMPT})
    return StreamStart(
        user=user,
        conversation_id=conversation.pk,
        question_id=exchange.question.pk,
        answer_id=exchange.answer.pk,
        reservation_id=reservation.pk,
        adapter_alias=conversation.adapter,
        context=context,
    )


def _in_transaction(work):
    """Run `work()` in one transaction on a short-lived connection, from async code."""

    def run():
        try:
            with transaction.atomic():
                return work()
        finally:
            connection.close()

    return sync_to_async(run)()


async def _renew(start: StreamStart, content: str) -> bool:
    """Renew the reservation and the answer's heartbeat (saving the text so far); False if that failed.

    A failed renewal does not end a healthy stream: it is tried again soon, and until the TTL has
    passed nothing is lost.
    """

    def work():
        quota_services.quota_renew(reservation_id=start.reservation_id)
        conversation_services.message_heartbeat(message_id=start.answer_id, content=content)

    try:
        await _in_transaction(work)
    except DatabaseError:
        logger.warning("stream heartbeat failed conversation=%s", start.conversation_id, exc_info=True)
        return False
    return True


RENEW_RETRY = 5.0  # seconds before a failed heartbeat is tried again


def _finish(
    start: StreamStart, progress: _Progress, *, status: str, error: AdapterError | Failure | None = None
):
    """Write the answer's end and settle its reservation, in one transaction; return `done.quota`."""
    usage = progress.usage or (NO_USAGE if status == Message.Status.COMPLETE else None)
    charge = status == Message.Status.COMPLETE or (
        status == Message.Status.INTERRUPTED and settings.QUOTA_CHARGE_INTERRUPTED
    )

    def work():
        conversation_services.message_finish(
            message_id=start.answer_id,
            content=progress.content,
            status=status,
            usage=_usage_dict(usage) if usage else None,
            error_code=error.code if error else "",
            error_message=error.message if error else "",
        )
        if not charge:
            quota_services.quota_release(reservation_id=start.reservation_id)
            return None
        tokens = usage.total_tokens if usage else 0
        return quota_services.quota_commit(reservation_id=start.reservation_id, tokens=tokens).stream_quota

    return _in_transaction(work)


def _usage_dict(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


async def _run_to_end(awaitable: Awaitable):
    """Await `awaitable` to its end even if the calling task is cancelled meanwhile; then re-raise."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


async def _with_ticks(iterator: AsyncIterator, *, timeout_at) -> AsyncIterator:
    """Items of `iterator`, and `None` whenever `timeout_at()` (a monotonic time) passes first.

    One pending `__anext__` task is awaited across ticks (never `wait_for`, whose timeout would
    cancel the adapter mid-step); leaving early cancels that task, then closes the iterator.
    """
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=max(0.0, timeout_at() - time.monotonic()))
            if not done:
                yield None
                continue
            step, pending = pending, None
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        await iterator.aclose()


async def generate_stream(start: StreamStart) -> AsyncIterator[bytes]:
    """The spec's `AIGenerationService.generate_stream`: the SSE frames of one answer.

    `start` first; the adapter's text as `chunk`s, with keep-alive comments while it is silent and a
    heartbeat on the reservation and the message every `QUOTA_RESERVATION_TTL / 3`; then `done` once
    the answer and the quota are committed, or `error`. When the client leaves (the task is cancelled
    or the generator closed), the adapter is closed at once and the partial answer kept as interrupted.
    """
    encoder = EventEncoder()
    progress = _Progress()
    outcome = "interrupted"
    settled = False  # the end is written (or being written): a late cancel must not write it again
    keepalive = settings.AI_STREAM_KEEPALIVE
    renew_every = settings.QUOTA_RESERVATION_TTL / 3
    next_keepalive = time.monotonic() + keepalive
    next_renew = time.monotonic() + renew_every
    try:
        yield encoder.encode(
            {
                "type": "start",
                "conversation_id": str(start.conversation_id),
                "user_message_id": str(start.question_id),
                "message_id": str(start.answer_id),
            }
        )
        deltas = adapters[start.adapter_alias].stream(start.context)
        ticking = _with_ticks(deltas, timeout_at=lambda: min(next_keepalive, next_renew))
        async with aclosing(ticking) as items:
            async for item in items:
                now = time.monotonic()
                if now >= next_renew:
                    next_renew = now + (renew_every if await _renew(start, progress.content) else RENEW_RETRY)
                if item is None:
                    if now >= next_keepalive:
                        yield KEEPALIVE
                        next_keepalive = now + keepalive
                elif isinstance(item, Finish):
                    progress.finish = item
                else:
                    if progress.first_chunk_after is None:
                        progress.first_chunk_after = now - progress.started
                    progress.parts.append(item)
                    yield encoder.encode({"type": "chunk", "content": item})
                    next_keepalive = now + keepalive
        settled = True
        quota = await _run_to_end(_finish(start, progress, status=Message.Status.COMPLETE))
        outcome = "complete"
        yield encoder.encode(
            {
                "type": "done",
                "message_id": str(start.answer_id),
                "finish_reason": progress.finish.reason if progress.finish else "stop",
                "usage": _usage_dict(progress.usage or NO_USAGE),
                "quota": quota,
            }
        )
    except AdapterError as error:
        outcome, settled = f"failed:{error.code}", True
        await _finish_or_leave_to_sweep(start, progress, error)
        yield _error_frame(encoder, start, error)
    except (asyncio.CancelledError, GeneratorExit):
        if not settled:
            try:
                await _run_to_end(_finish(start, progress, status=Message.Status.INTERRUPTED))
            except Exception:  # left to the sweep; the cancellation goes on
                logger.exception("could not write the end of stream conversation=%s", start.conversation_id)
        raise
    except Exception:
        outcome, settled = "failed:internal_error", True
        logger.exception(
            "stream failed user=%s conversation=%s", start.user.get_username(), start.conversation_id
        )
        await _finish_or_leave_to_sweep(start, progress, INTERNAL_ERROR)
        yield _error_frame(encoder, start, INTERNAL_ERROR)
    finally:
        _log(start, progress, outcome)


async def _finish_or_leave_to_sweep(start: StreamStart, progress: _Progress, error) -> None:
    """Write a failed answer's end; if even that fails, log it: the stream still ends with its
    `error` event, and the sweep interrupts the answer and frees the reservation once they expire."""
    try:
        await _run_to_end(_finish(start, progress, status=Message.Status.FAILED, error=error))
    except Exception:
        logger.exception("could not write the end of stream conversation=%s", start.conversation_id)


def _error_frame(encoder: EventEncoder, start: StreamStart, error: AdapterError | Failure) -> bytes:
    return encoder.encode(
        {
            "type": "error",
            "code": error.code,
            "message": error.message,
            "retryable": error.retryable,
            "message_id": str(start.answer_id),
        }
    )


def _log(start: StreamStart, progress: _Progress, outcome: str) -> None:
    usage = progress.usage
    first = progress.first_chunk_after
    logger.info(
        "stream user=%s conversation=%s adapter=%s chunks=%d tokens=%s first_chunk_ms=%s duration_ms=%.0f "
        "outcome=%s",
        start.user.get_username(),
        start.conversation_id,
        start.adapter_alias,
        len(progress.parts),
        usage.total_tokens if usage else "-",
        f"{first * 1000:.0f}" if first is not None else "-",
        (time.monotonic() - progress.started) * 1000,
        outcome,
    )


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
