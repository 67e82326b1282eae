"""The bare baseline's one view: the chat stream's frames (start, N chunks, done), with no database.

It answers the same path and reads the same `[mock:chunks=N]` and `[mock:delay_ms=D]` directives as
chatsvc's mock adapter, and sends frames of the same shape and size, so the client cannot tell the two
apart: what chatsvc costs on top of this is its own work (auth, quota, database, middleware).
"""

import asyncio
import json
import re
import uuid

from django.http import HttpResponseNotAllowed, JsonResponse, StreamingHttpResponse
from django.urls import path

DIRECTIVE = re.compile(r"\[mock:(chunks|delay_ms)=(\d+)\]")
WORDS = ["This", "is", "a", "reply", "from", "the", "mock", "adapter", "and", "it", "answers", "with", "the"]
WORDS += ["same", "words", "every", "time"]


def frame(event_id: int, data: dict) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event_id}\ndata: {payload}\n\n".encode()


async def frames(chunks: int, delay: float):
    message_id = str(uuid.uuid4())
    yield frame(
        1,
        {
            "type": "start",
            "conversation_id": str(uuid.uuid4()),
            "user_message_id": str(uuid.uuid4()),
            "message_id": message_id,
        },
    )
    for index in range(chunks):
        if index and delay:
            await asyncio.sleep(delay)
        word = WORDS[index % len(WORDS)]
        yield frame(index + 2, {"type": "chunk", "content": word if index == 0 else " " + word})
    usage = {"prompt_tokens": 5, "completion_tokens": chunks, "total_tokens": 5 + chunks}
    quota = {"requests_remaining": None, "tokens_remaining": None, "resets_at": "2030-01-01T00:00:00+00:00"}
    yield frame(
        chunks + 2,
        {"type": "done", "message_id": message_id, "finish_reason": "stop", "usage": usage, "quota": quota},
    )


async def chat_stream(request):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    directives = {name: int(value) for name, value in DIRECTIVE.findall(json.loads(request.body)["message"])}
    response = StreamingHttpResponse(
        frames(directives.get("chunks", 12), directives.get("delay_ms", 0) / 1000),
        content_type="text/event-stream; charset=utf-8",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def healthz(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("api/ai/chat/stream", chat_stream),
    path("healthz", healthz),
]
