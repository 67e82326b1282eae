"""`OpenAIAdapter` through the real `openai` SDK against the local fake OpenAI-compatible server."""

import asyncio
import logging
import socket

import pytest

from ai.adapters import Finish, Usage
from ai.adapters.openai import OpenAIAdapter
from ai.tests.adapter_runs import run
from ai.tests.fake_openai import fake_pieces

API_KEY = "sk-test-secret-4242"


@pytest.fixture
def adapter(fake_openai):
    return openai_adapter(base_url=fake_openai.base_url)


def openai_adapter(**options):
    options = {"model": "gpt-test", "api_key": API_KEY, "timeout": 5, **options}
    return OpenAIAdapter(alias="gpt", params={"OPTIONS": options})


def ask(content):
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]


def test_a_stream_yields_the_text_then_the_servers_usage(adapter, fake_openai):
    items, error = run(adapter, ask("Hello there [fake:chunks=4]"))
    assert error is None
    assert items == [*fake_pieces(4), Finish(reason="stop", usage=Usage(5, 4, 9, estimated=False))]
    [request] = fake_openai.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == "gpt-test"
    assert request.body["messages"] == ask("Hello there [fake:chunks=4]")
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.completed.is_set()


def test_extra_parameters_are_sent_with_the_request(fake_openai):
    adapter = openai_adapter(base_url=fake_openai.base_url, extra={"temperature": 0.2, "max_tokens": 50})
    assert run(adapter, ask("Hi"))[1] is None
    assert fake_openai.requests[0].body["temperature"] == 0.2
    assert fake_openai.requests[0].body["max_tokens"] == 50


def test_finish_reason_length_is_reported(adapter):
    items, _ = run(adapter, ask("[fake:finish=length]"))
    assert items[-1].reason == "length"


def test_usage_is_estimated_when_the_server_sends_none(adapter):
    items, error = run(adapter, ask("Count me in [fake:no_usage]"))
    assert error is None
    usage = items[-1].usage
    assert usage.estimated is True
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens == len("".join(fake_pieces())) // 4 + 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_include_usage_false_omits_stream_options_and_estimates(fake_openai):
    adapter = openai_adapter(base_url=fake_openai.base_url, include_usage=False)
    items, _ = run(adapter, ask("Hi"))
    assert "stream_options" not in fake_openai.requests[0].body
    assert items[-1].usage.estimated is True


def test_streams_of_one_adapter_share_its_connection(adapter, fake_openai):
    async def twice():
        for _ in range(2):
            async for _item in adapter.stream(ask("Hi")):
                pass
        await adapter.aclose()

    asyncio.run(twice())
    first, second = fake_openai.requests
    assert first.client_port == second.client_port


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, "adapter_refused", False),
        (401, "adapter_refused", False),
        (403, "adapter_refused", False),
        (404, "adapter_refused", False),
        (429, "rate_limited", True),
        (500, "adapter_error", True),
        (503, "adapter_error", True),
    ],
)
def test_an_error_status_before_the_stream_maps_to_a_safe_adapter_error(
    adapter, caplog, status, code, retryable
):
    with caplog.at_level(logging.WARNING, logger="ai.adapters"):
        items, error = run(adapter, ask(f"[fake:status={status}]"))
    assert items == []
    assert (error.code, error.retryable) == (code, retryable)
    assert API_KEY not in error.message
    assert "Incorrect API key" not in error.message  # no upstream body
    assert f"HTTP {status}" in caplog.text
    assert API_KEY not in caplog.text


def test_refusal_message_names_the_status(adapter):
    _, error = run(adapter, ask("[fake:status=401]"))
    assert error.message == "The AI provider refused the request (HTTP 401)."


def test_a_connection_broken_mid_stream_is_an_adapter_error_after_the_chunks_sent(adapter):
    items, error = run(adapter, ask("[fake:break_after=2]"))
    assert items == fake_pieces()[:2]
    assert (error.code, error.retryable) == ("adapter_error", True)


@pytest.mark.parametrize("scenario", ["[fake:end_after=2]", "[fake:garbage_after=2]"])
def test_an_unfinished_or_unreadable_stream_is_an_adapter_error(adapter, scenario):
    items, error = run(adapter, ask(scenario))
    assert items == fake_pieces()[:2]
    assert error.code == "adapter_error"


@pytest.mark.parametrize(
    ("scenario", "pieces"),
    [("[fake:slow_headers=3]", 0), ("[fake:slow=3]", 0), ("[fake:hang_after=2]", 2)],
)
def test_a_silent_server_hits_the_timeout(fake_openai, scenario, pieces):
    adapter = openai_adapter(base_url=fake_openai.base_url, timeout=0.3)
    items, error = run(adapter, ask(scenario))
    assert items == fake_pieces()[:pieces]
    assert (error.code, error.retryable) == ("adapter_timeout", True)


def test_an_unreachable_server_is_adapter_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, error = run(openai_adapter(base_url=f"http://127.0.0.1:{port}/v1"), ask("Hi"))
    assert (error.code, error.retryable) == ("adapter_unavailable", True)


def test_a_missing_api_key_is_a_refusal(fake_openai, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    _, error = run(openai_adapter(base_url=fake_openai.base_url, api_key=""), ask("Hi"))
    assert (error.code, error.retryable) == ("adapter_refused", False)
    assert fake_openai.requests == []


def test_cancelling_the_consumer_hangs_up_on_the_server(adapter, fake_openai):
    async def scenario():
        first = asyncio.Event()

        async def consume():
            async for _ in adapter.stream(ask("[fake:hang_after=1]")):
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Still inside the loop: the hang-up must not wait for the loop's shutdown.
        hung_up = await asyncio.to_thread(fake_openai.wait_for_disconnect, 2)
        await adapter.aclose()
        return hung_up

    assert asyncio.run(scenario()) is True


def test_cancelling_before_the_answer_starts_hangs_up_on_the_server(adapter, fake_openai):
    async def scenario():
        task = asyncio.create_task(anext(adapter.stream(ask("[fake:slow_headers=5]"))))
        await asyncio.to_thread(fake_openai.wait_for_request, 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        hung_up = await asyncio.to_thread(fake_openai.wait_for_disconnect, 2)
        await adapter.aclose()
        return hung_up

    assert asyncio.run(scenario()) is True


def test_closing_the_stream_hangs_up_on_the_server(adapter, fake_openai):
    async def scenario():
        stream = adapter.stream(ask("[fake:chunks=50][fake:delay_ms=100]"))
        assert await anext(stream) == "Hello"
        await stream.aclose()
        hung_up = await asyncio.to_thread(fake_openai.wait_for_disconnect, 2)
        await adapter.aclose()
        return hung_up

    assert asyncio.run(scenario()) is True
    assert fake_openai.requests[0].pieces_sent < 50


def test_check_reports_bad_options():
    adapter = OpenAIAdapter(alias="gpt", params={"OPTIONS": {"max_retries": -1, "extra": [], "modle": "x"}})
    assert [message.id for message in adapter.check()] == ["ai.E201", "ai.E203", "ai.E204", "ai.W201"]
    assert openai_adapter().check() == []


def test_check_warns_when_the_default_adapter_has_no_api_key(settings):
    settings.AI_DEFAULT_ADAPTER = "gpt"
    assert [message.id for message in openai_adapter(api_key="").check()] == ["ai.W202"]
