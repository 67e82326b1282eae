"""The AI SDK's UI message stream (protocol v1): an answer's events as UI message chunks.

One more encoder of the events `ai/sse.py` encodes (API.md, "AI SDK clients"): the same answer, as the
chunks the AI SDK's `readUIMessageStream` assembles into a message. Pure functions, no database; the
HTTP views frame the chunks as SSE `data:` lines, the WebSocket consumer numbers them as envelopes.
"""

import json
from collections.abc import AsyncIterator
from contextlib import aclosing

from ai.sse import KEEPALIVE

CONTENT_TYPE = "text/event-stream"
HEADERS = {"x-vercel-ai-ui-message-stream": "v1", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def ui_chunks(event: dict, *, message_id: str) -> list[dict]:
    """The UI message chunks of one contract event of the answer `message_id` (a text part of that id).

    `start` opens the message and its text part; each `chunk` is a `text-delta`; the end closes the
    text part, then `finish` (with usage and quota as metadata), `abort` after a stop, or `error`.
    """
    match event["type"]:
        case "start":
            metadata = {"conversationId": event["conversation_id"], "userMessageId": event["user_message_id"]}
            return [
                {"type": "start", "messageId": message_id, "messageMetadata": metadata},
                {"type": "text-start", "id": message_id},
            ]
        case "chunk":
            return [{"type": "text-delta", "id": message_id, "delta": event["content"]}]
        case "done" if event["finish_reason"] == "stopped":
            return [{"type": "text-end", "id": message_id}, {"type": "abort", "reason": "stopped"}]
        case "done":
            metadata = {"usage": event["usage"], "quota": event["quota"]}
            return [
                {"type": "text-end", "id": message_id},
                {"type": "finish", "finishReason": event["finish_reason"], "messageMetadata": metadata},
            ]
        case "error":
            return [{"type": "text-end", "id": message_id}, {"type": "error", "errorText": event["message"]}]
    raise ValueError(f"not an event of an answer: {event.get('type')!r}")


async def chunk_stream(news: AsyncIterator, *, message_id: str) -> AsyncIterator[list[dict] | None]:
    """The chunks of each piece of an answer's news (`ai.events.News`: a list of `Event`s, or `None`
    for a quiet while, passed on as `None`), as a list; closing it closes `news` (the reader leaves)."""
    async with aclosing(news):
        async for events in news:
            if events is None:
                yield None
            else:
                yield [chunk for event in events for chunk in ui_chunks(event.data, message_id=message_id)]


def sse_frames(chunks: list[dict] | None) -> bytes:
    """The SSE frames of some chunks, for one write (`None`: a keep-alive comment)."""
    return KEEPALIVE if chunks is None else b"".join(map(sse_frame, chunks))


def sse_frame(chunk: dict) -> bytes:
    """One chunk as one SSE `data:` line (JSON escapes every line break)."""
    return b"data: " + json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
