"""The UI message stream encoder: the contract's events as the AI SDK's chunks (no database)."""

import asyncio
import json

import pytest

from ai.events import Event
from ai.ui_stream import DONE, chunk_stream, sse_frame, sse_frames, ui_chunks

ANSWER = "6b2b4c9e-2d6f-4a43-9d55-0c3d2f7a9e10"
START = {
    "type": "start",
    "conversation_id": "0f8e7a4c-5b1d-4c2e-8f3a-9d6b1e2c7a55",
    "user_message_id": "1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d",
    "message_id": ANSWER,
}
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
QUOTA = {"requests_remaining": 9, "tokens_remaining": None, "resets_at": "2026-12-02T00:00:00Z"}


def test_start_opens_the_message_with_its_ids_as_metadata_and_one_text_part():
    assert ui_chunks(START, message_id=ANSWER) == [
        {
            "type": "start",
            "messageId": ANSWER,
            "messageMetadata": {
                "conversationId": START["conversation_id"],
                "userMessageId": START["user_message_id"],
            },
        },
        {"type": "text-start", "id": ANSWER},
    ]


def test_each_chunk_is_a_text_delta_of_that_part():
    assert ui_chunks({"type": "chunk", "content": "Hel"}, message_id=ANSWER) == [
        {"type": "text-delta", "id": ANSWER, "delta": "Hel"}
    ]


@pytest.mark.parametrize("reason", ["stop", "length"])
def test_done_closes_the_part_then_finishes_with_usage_and_quota(reason):
    done = {"type": "done", "message_id": ANSWER, "finish_reason": reason, "usage": USAGE, "quota": QUOTA}

    assert ui_chunks(done, message_id=ANSWER) == [
        {"type": "text-end", "id": ANSWER},
        {"type": "finish", "finishReason": reason, "messageMetadata": {"usage": USAGE, "quota": QUOTA}},
    ]


def test_a_stopped_answer_ends_with_abort():
    done = {"type": "done", "message_id": ANSWER, "finish_reason": "stopped", "usage": USAGE, "quota": QUOTA}

    assert ui_chunks(done, message_id=ANSWER) == [
        {"type": "text-end", "id": ANSWER},
        {"type": "abort", "reason": "stopped"},
    ]


def test_an_error_ends_with_its_message_for_end_users():
    error = {
        "type": "error",
        "code": "adapter_error",
        "message": "The AI service failed.",
        "retryable": True,
        "message_id": ANSWER,
    }

    assert ui_chunks(error, message_id=ANSWER) == [
        {"type": "text-end", "id": ANSWER},
        {"type": "error", "errorText": "The AI service failed."},
    ]


def test_an_unknown_event_is_a_programming_error():
    with pytest.raises(ValueError, match="keep-alive"):
        ui_chunks({"type": "keep-alive"}, message_id=ANSWER)


def test_a_frame_is_one_data_line_of_json_even_for_line_breaks_and_nul():
    frame = sse_frame({"type": "text-delta", "id": ANSWER, "delta": "a\nb\r\nc\x00é"})

    assert frame.startswith(b"data: ")
    assert frame.endswith(b"\n\n")
    assert frame.count(b"\n") == 2
    assert b"\r" not in frame
    assert b"\x00" not in frame
    assert json.loads(frame[6:]) == {"type": "text-delta", "id": ANSWER, "delta": "a\nb\r\nc\x00é"}
    assert "é".encode() in frame


def test_a_quiet_while_is_a_keep_alive_comment_and_the_end_is_done():
    assert sse_frames(None) == b": keep-alive\n\n"
    assert DONE == b"data: [DONE]\n\n"


def test_the_chunks_of_one_piece_of_news_are_one_write_of_their_frames():
    chunks = [{"type": "text-end", "id": ANSWER}, {"type": "abort", "reason": "stopped"}]

    assert sse_frames(chunks) == sse_frame(chunks[0]) + sse_frame(chunks[1])


def test_chunk_stream_encodes_each_event_in_order_and_passes_quiet_whiles_on():
    news = [
        [Event(1, START)],
        None,
        [
            Event(2, {"type": "chunk", "content": "Hi"}),
            Event(
                3,
                {
                    "type": "done",
                    "message_id": ANSWER,
                    "finish_reason": "stop",
                    "usage": USAGE,
                    "quota": None,
                },
            ),
        ],
    ]

    async def source():
        for events in news:
            yield events

    async def collect():
        return [chunks async for chunks in chunk_stream(source(), message_id=ANSWER)]

    news = asyncio.run(collect())

    assert [chunks and [chunk["type"] for chunk in chunks] for chunks in news] == [
        ["start", "text-start"],
        None,
        ["text-delta", "text-end", "finish"],
    ]


def test_leaving_the_chunk_stream_closes_the_events_it_reads():
    closed = []

    async def source():
        try:
            yield [Event(1, START)]
            yield [Event(2, {"type": "chunk", "content": "Hi"})]
        finally:
            closed.append(True)

    async def leave_early():
        stream = chunk_stream(source(), message_id=ANSWER)
        await anext(stream)
        await stream.aclose()

    asyncio.run(leave_early())

    assert closed == [True]
