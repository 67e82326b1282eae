"""The stream through the OpenAI adapter, against the local fake OpenAI server (no real provider)."""

import httpx
import pytest

from ai.tests.fake_openai import fake_pieces
from ai.tests.sse_client import events, iter_frames, stream, wait_for
from conversations.models import Message
from quota.models import Quota, Reservation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def openai_server(asgi_server_factory, fake_openai):
    """daphne configured only through the environment to use the fake as its OpenAI provider."""
    return asgi_server_factory(
        AI_DEFAULT_ADAPTER="openai",
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_API_KEY="sk-test-secret",
        OPENAI_MODEL="fake-model",
        OPENAI_TIMEOUT="5",
    )


@pytest.fixture
def client():
    with httpx.Client(timeout=30) as client:
        yield client


def test_openai_adapter_streams_through_the_endpoint_with_upstream_usage(
    openai_server, fake_openai, client, token
):
    frames = events(client, openai_server.url, token.key, {"message": "Hi [fake:chunks=3]"})
    assert [f.type for f in frames] == ["start", "chunk", "chunk", "chunk", "done"]
    assert "".join(f.data["content"] for f in frames[1:-1]) == "".join(fake_pieces(3))
    seen = fake_openai.wait_for_request()
    assert seen.body["model"] == "fake-model"
    assert seen.body["stream"] is True
    assert seen.body["messages"][-1] == {"role": "user", "content": "Hi [fake:chunks=3]"}
    assert seen.headers["authorization"] == "Bearer sk-test-secret"
    done = frames[-1].data
    answer = Message.objects.get(pk=done["message_id"])
    assert answer.status == "complete"
    assert answer.usage == done["usage"]
    assert done["usage"]["completion_tokens"] == 3


def test_upstream_failure_mid_stream_ends_with_an_error_event_and_a_failed_message(
    openai_server, fake_openai, client, token, user
):
    frames = events(client, openai_server.url, token.key, {"message": "Hi [fake:break_after=2]"})
    assert [f.type for f in frames] == ["start", "chunk", "chunk", "error"]
    error = frames[-1].data
    assert error["code"] == "adapter_error"
    assert error["retryable"] is True
    assert "sk-test-secret" not in error["message"]
    answer = Message.objects.get(pk=error["message_id"])
    assert answer.status == "failed"
    assert answer.content == "".join(fake_pieces(2))
    assert Reservation.objects.count() == 0
    assert Quota.objects.get(user=user).requests_used == 0


def test_upstream_refusal_is_a_non_retryable_error_without_secrets(openai_server, client, token):
    frames = events(client, openai_server.url, token.key, {"message": "Hi [fake:status=401]"})
    error = frames[-1].data
    assert [f.type for f in frames] == ["start", "error"]
    assert error["code"] == "adapter_refused"
    assert error["retryable"] is False
    assert "sk-test-secret" not in error["message"]


def test_a_stop_closes_the_upstream_request_at_once(openai_server, fake_openai, token):
    body = {"message": "Hi [fake:chunks=200][fake:delay_ms=50]"}
    with httpx.Client(timeout=30) as client, stream(client, openai_server.url, token.key, body) as response:
        frames = iter_frames(response)
        start = next(frames).data
        next(frames)
        stopped = client.post(
            f"{openai_server.url}/api/ai/chat/stream/{start['message_id']}/stop",
            headers={"Authorization": f"Token {token.key}"},
        )
        rest = list(frames)
    assert stopped.status_code == 200
    assert stopped.json()["status"] == "stopped"
    assert fake_openai.wait_for_disconnect(timeout=1)
    assert fake_openai.requests[-1].pieces_sent < 200
    assert rest[-1].data["type"] == "done"
    assert rest[-1].data["finish_reason"] == "stopped"
    assert rest[-1].data["usage"]["total_tokens"] > 0  # estimated: the upstream never reported it


def test_client_hang_up_closes_the_upstream_request_under_on_disconnect_interrupt(
    asgi_server_factory, fake_openai, token
):
    server = asgi_server_factory(
        AI_DEFAULT_ADAPTER="openai",
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_API_KEY="sk-test-secret",
        OPENAI_MODEL="fake-model",
        AI_STREAM_ON_DISCONNECT="interrupt",
    )
    body = {"message": "Hi [fake:chunks=200][fake:delay_ms=50]"}
    with httpx.Client(timeout=30) as client, stream(client, server.url, token.key, body) as response:
        frames = iter_frames(response)
        start = next(frames).data
        next(frames)
    assert fake_openai.wait_for_disconnect(timeout=5)
    assert fake_openai.requests[-1].pieces_sent < 200
    answer = wait_for(
        lambda: Message.objects.exclude(status="streaming").filter(pk=start["message_id"]).first()
    )
    assert answer.status == "interrupted"


def test_refused_request_never_reaches_the_adapter(openai_server, fake_openai, client, token, user):
    Quota.objects.create(user=user, request_limit=0)
    response = client.post(
        f"{openai_server.url}/api/ai/chat/stream",
        json={"message": "Hi"},
        headers={"Authorization": f"Token {token.key}"},
    )
    assert response.status_code == 429
    assert fake_openai.wait_for_request(timeout=0.5) is None
