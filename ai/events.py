"""An answer's events (`start`, `chunk`…, `done` | `error`, numbered as the contract's SSE `id`s) and the
log that keeps them for its readers: the owner's log of a running answer (`ai.generations`), or another
process's copy of it (`ai.relay`). Readers only wait for news: they never hold the answer.

A reader gets the events as `News`: each time, all those logged since it last looked, which a transport
sends at once (a reader that joins late, or falls behind, catches up in one write, not one per event),
or `None` after a quiet while (the transport sends a keep-alive)."""

import asyncio
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
    """An answer's events in order, and the readers waiting for the next ones."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.readers = 0
        self.ended = asyncio.Event()  # no event will follow (the last one logged ends the answer)
        self._changed: asyncio.Future | None = None  # created when a reader waits, resolved by `log`

    def log(self, data: dict) -> Event:
        event = Event(len(self.events) + 1, data)
        self.events.append(event)
        if event.ends:
            self.ended.set()
        if self._changed is not None:
            self._changed.set_result(None)
            self._changed = None
        return event

    async def read(self, after: int) -> AsyncIterator[News]:
        """The events after `after`, then the live ones to the end, as news; `None` after
        `AI_STREAM_KEEPALIVE` seconds without any."""
        keepalive = settings.AI_STREAM_KEEPALIVE
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
                if self._changed is None:
                    self._changed = asyncio.get_running_loop().create_future()
                done, _ = await asyncio.wait({self._changed}, timeout=keepalive)
                if not done:
                    yield None
        finally:
            self.readers -= 1
            metrics.reader_closed()
