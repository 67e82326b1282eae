"""`MockAdapter`: deterministic readable replies, its directives, its usage and its cancellation."""

import asyncio
import json
import re
import time

import pytest

from ai.adapters import Finish, Usage
from ai.adapters.mock import SENTENCES, MockAdapter
from ai.tests.adapter_runs import run

WORDS = {word.strip(".") for sentence in SENTENCES for word in sentence.split()}


def mock(**options):
    return MockAdapter(alias="mock", params={"OPTIONS": {"delay": 0, **options}})


def ask(*contents):
    """A context of user messages (and, between them, assistant answers)."""
    roles = ["user", "assistant"] * len(contents)
    return [{"role": role, "content": content} for role, content in zip(roles, contents, strict=False)]


def pieces_and_finish(adapter, messages):
    items, error = run(adapter, messages)
    assert error is None
    assert isinstance(items[-1], Finish)
    assert all(isinstance(item, str) and item for item in items[:-1])
    return items[:-1], items[-1]


def test_the_same_context_gives_the_same_reply_and_another_context_another():
    first, _ = pieces_and_finish(mock(), ask("Tell me about trains"))
    again, _ = pieces_and_finish(mock(), ask("Tell me about trains"))
    other, _ = pieces_and_finish(mock(), ask("Tell me about rivers"))
    assert first == again
    assert first != other


def test_default_reply_is_twelve_chunks_of_readable_words():
    pieces, finish = pieces_and_finish(mock(), ask("Hello"))
    assert len(pieces) == 12
    text = "".join(pieces)
    assert text.endswith(".")
    assert text[0].isupper()
    assert text.split() == [piece.strip() for piece in pieces]
    assert {word.strip(".") for word in text.split()} <= WORDS
    assert finish.reason == "stop"


def test_chunks_directive_sets_the_number_of_chunks():
    pieces, finish = pieces_and_finish(mock(), ask("Hello [mock:chunks=40]"))
    assert len(pieces) == 40
    assert finish.usage.completion_tokens == 40
    assert pieces_and_finish(mock(), ask("[mock:chunks=0]"))[0] == []


def test_directives_come_from_the_newest_user_message_only():
    pieces, _ = pieces_and_finish(mock(), ask("[mock:chunks=2]", "An answer.", "And now?"))
    assert len(pieces) == 12


def test_usage_counts_context_words_and_chunks_sent():
    messages = [
        {"role": "system", "content": "Be brief."},
        *ask("one two  three\nfour", "five", "six [mock:chunks=3]"),
    ]
    _, finish = pieces_and_finish(mock(), messages)
    assert finish.usage == Usage(prompt_tokens=9, completion_tokens=3, total_tokens=12, estimated=False)


def test_delay_option_spaces_the_chunks():
    started = time.monotonic()
    pieces_and_finish(mock(delay=0.05), ask("[mock:chunks=5]"))
    assert time.monotonic() - started >= 0.2


def test_delay_ms_directive_overrides_the_delay_option():
    started = time.monotonic()
    pieces_and_finish(mock(delay=10), ask("[mock:chunks=5][mock:delay_ms=0]"))
    assert time.monotonic() - started < 1
    started = time.monotonic()
    pieces_and_finish(mock(delay=0), ask("[mock:chunks=3][mock:delay_ms=60]"))
    assert time.monotonic() - started >= 0.12


def test_fail_after_sends_that_many_chunks_then_an_adapter_error():
    items, error = run(mock(), ask("[mock:fail_after=3]"))
    assert len(items) == 3
    assert all(isinstance(item, str) for item in items)
    assert error.code == "adapter_error"
    assert error.retryable is True
    assert error.message


def test_echo_context_replies_with_the_context_as_json():
    messages = [
        {"role": "system", "content": "Be kind."},
        *ask("Hi", "Hello!", 'Quote "me" [mock:echo_context]'),
    ]
    pieces, finish = pieces_and_finish(mock(), messages)
    assert json.loads("".join(pieces)) == messages
    assert len(pieces) == 12
    assert finish.usage.completion_tokens == 12
    pieces, _ = pieces_and_finish(mock(), ask("[mock:echo_context][mock:chunks=3]"))
    assert len(pieces) == 3
    assert json.loads("".join(pieces)) == ask("[mock:echo_context][mock:chunks=3]")


def test_cancelling_the_task_stops_the_mock_at_once():
    async def scenario():
        stream = mock(delay=30).stream(ask("[mock:chunks=5]"))
        first = asyncio.Event()

        async def consume():
            async for _ in stream:
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 1)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 0.5


def test_closing_the_stream_ends_it():
    async def scenario():
        stream = mock(delay=30).stream(ask("[mock:chunks=5]"))
        assert re.match(r"\w", await anext(stream))
        await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)

    asyncio.run(asyncio.wait_for(scenario(), 1))


def test_check_refuses_a_negative_delay():
    assert [message.id for message in mock(delay=-1).check()] == ["ai.E101"]
    assert mock().check() == []


def test_huge_directives_are_clamped_to_a_bounded_answer():
    pieces, finish = pieces_and_finish(mock(), ask("[mock:chunks=100000000][mock:delay_ms=0]"))
    assert len(pieces) == 5000
    assert finish.usage.completion_tokens == 5000
    items, error = run(mock(), ask(f"[mock:fail_after={'9' * 10000}]"))
    assert (len(items), error.code) == (5000, "adapter_error")
    long_context = ask("word " * 2000 + "[mock:echo_context][mock:chunks=99999]")
    pieces, _ = pieces_and_finish(mock(), long_context)
    assert len(pieces) == 5000
    assert json.loads("".join(pieces)) == long_context


def test_a_huge_delay_directive_waits_ten_seconds_at_most(monkeypatch):
    waits = []

    async def record(seconds):
        waits.append(seconds)

    monkeypatch.setattr("ai.adapters.mock.asyncio.sleep", record)
    pieces_and_finish(mock(), ask("[mock:chunks=3][mock:delay_ms=86400000]"))
    assert waits == [10.0, 10.0]
