"""Server-Sent Events framing of an answer's events: one `id:` line and one `data:` line of JSON each."""

import json
from collections.abc import AsyncIterator
from contextlib import aclosing

from django.http import StreamingHttpResponse

KEEPALIVE = b": keep-alive\n\n"


def encode(event) -> bytes:
    """One event as an SSE frame, encoded at its first reader and kept on the event for the others.
    JSON escapes every control character, so `\\r`, `\\n` and `\\0` never appear inside the
    `data:` field and one event is always exactly one `data:` line."""
    if event.frame is None:
        payload = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
        object.__setattr__(event, "frame", f"id: {event.id}\ndata: {payload}\n\n".encode())  # frozen
    return event.frame


async def frames(news: AsyncIterator) -> AsyncIterator[bytes]:
    """The frames of an answer's news (`ai.events.News`), each piece of it in one write (`None`, a quiet
    while: a keep-alive comment)."""
    async with aclosing(news):
        async for events in news:
            yield KEEPALIVE if events is None else b"".join(map(encode, events))


def response(frames: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """The contract's stream answer: never buffered, never cached, never compressed."""
    answer = StreamingHttpResponse(frames, content_type="text/event-stream; charset=utf-8")
    answer["Cache-Control"] = "no-cache"
    answer["X-Accel-Buffering"] = "no"
    return answer
