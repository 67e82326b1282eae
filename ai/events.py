"""An answer's events (`start`, `chunk`…, `done` | `error`, numbered as the contract's SSE `id`s) and the
log that keeps them for its readers: the owner's log of a running answer (`ai.generations`), or another
process's copy of it (`ai.relay`). Readers only wait for news: they never hold the answer.

A reader gets the events as `News`: each time, all those logged since it last looked, which a transport
sends at once (a reader that joins late, or falls behind, catches up in one write, not one per event),
or `None` after a quiet while (the transport sends a keep-alive)."""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from django.conf import settings

from chatsvc import metrics


@dataclass(frozen=True, slots=True)
class Event:
    """One event of an answer: `id` as the contract's SSE numbers it (1, 2, 3 …), `data` its JSON object;
    `frame`, its SSE frame, is encoded once for all of the answer's readers (`ai.sse.encode`)."""

    id: int
    data: dict
    frame: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def ends(self) -> bool:
        return self.data["type"] in ("done", "error")


News = list[Event] | None


@dataclass(frozen=True)
class Failure:
    """Why an answer ended in an `error` event when no `AdapterError` (which has the same fields) says it."""

    code: str
    message: str
    retryable: bool


INTERRUPTED = Failure("interrupted", "The answer was interrupted: its server stopped. Try again.", True)


def error_data(error, message_id: str) -> dict:
    """The `error` event of an answer that ended with `error` (a `Failure` or an `AdapterError`)."""
    return {
        "type": "error",
        "code": error.code,
        "message": error.message,
        "retryable": error.retryable,
        "message_id": message_id,
    }


class EventLog:
    """An answer's events in order, and the readers waiting for the next ones.

    A waiting reader awaits a future of its own (a reader that leaves cancels only its own), resolved
    by the next event, or by the log's one quiet timer: `AI_STREAM_KEEPALIVE` seconds after the readers
    were last woken, it wakes those waiting with nothing new — not a timer for every wait of every
    reader (`asyncio.wait` with a timeout made a wake of 5 readers cost 35 µs a reader, now 12)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.readers = 0
        self.ended = asyncio.Event()  # no event will follow (the last one logged ends the answer)
        self._waiting: list[asyncio.Future] = []  # a future per waiting reader: True news, False quiet
        self._woken = time.monotonic()  # when the waiting readers were last woken (or the log began)
        self._quiet: asyncio.TimerHandle | None = None  # armed while a reader waits

    def log(self, data: dict) -> Event:
        event = Event(len(self.events) + 1, data)
        self.events.append(event)
        if event.ends:
            self.ended.set()
            if self._quiet is not None:
                self._quiet.cancel()
                self._quiet = None
        self._wake(news=True)
        return event

    def _wake(self, *, news: bool) -> None:
        self._woken = time.monotonic()
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.done():  # its reader left
                waiter.set_result(news)

    async def _news(self) -> bool:
        """Wait for the next event (True) or a quiet while (False)."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiting.append(waiter)
        if self._quiet is None:
            self._quiet = loop.call_later(self._quiet_in(), self._on_quiet)
        return await waiter

    def _quiet_in(self) -> float:
        """Seconds until the waiting readers have waited `AI_STREAM_KEEPALIVE` since they were woken."""
        return self._woken + settings.AI_STREAM_KEEPALIVE - time.monotonic()

    def _on_quiet(self) -> None:
        self._quiet = None
        self._waiting = [waiter for waiter in self._waiting if not waiter.done()]
        if not self._waiting:
            return  # armed again by the next reader that waits
        if (due := self._quiet_in()) > 0:  # news woke the readers meanwhile: quiet since then
            self._quiet = asyncio.get_running_loop().call_later(due, self._on_quiet)
        else:
            self._wake(news=False)

    async def read(self, after: int) -> AsyncIterator[News]:
        """The events after `after`, then the live ones to the end, as news; `None` after
        `AI_STREAM_KEEPALIVE` seconds without any."""
        self.readers += 1
        metrics.reader_opened()
        try:
            while True:
                if after < len(self.events):
                    news = self.events[after:]
                    after += len(news)
                    yield news
                    continue  # more may have come meanwhile, the end among them
                if self.ended.is_set():
                    return  # read from its last event on: nothing more will come
                if not await self._news():
                    yield None
        finally:
            self.readers -= 1
            metrics.reader_closed()
