"""POST /api/ai/chat/stream end to end: a real daphne process, a real HTTP client, PostgreSQL."""

import json
import socket
import time

import httpx
import psycopg
import pytest
from httpx_sse import connect_sse

from ai.tests.sse_client import events, iter_frames, stream, wait_for
from conversations.models import Message
from quota.models import Quota, Reservation

pytestmark = pytest.mark.django_db(transaction=True)

CHUNKS = "[mock:chunks=4][mock:delay_ms=0]"


@pytest.fixture
def client():
    with httpx.Client(timeout=30) as client:
        yield client


def answer_of(frames) -> str:
    return "".join(f.data["content"] for f in frames if f.type == "chunk")


def test_stream_sends_start_chunks_done_with_exact_headers_and_numbered_ids(live_asgi, client, token, user):
    with stream(client, live_asgi.url, token.key, {"message": f"Hello {CHUNKS}"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-length" not in response.headers
        assert "content-encoding" not in response.headers
        frames = list(iter_frames(response))

    assert [f.type for f in frames] == ["start", "chunk", "chunk", "chunk", "chunk", "done"]
    assert [f.id for f in frames] == [str(n) for n in range(1, 7)]
    assert all(len(f.raw_lines) == 2 for f in frames), "one id: and one data: line per event"
    start, done = frames[0].data, frames[-1].data
    answer = Message.objects.get(pk=start["message_id"])
    question = Message.objects.get(pk=start["user_message_id"])
    assert str(answer.conversation_id) == start["conversation_id"] == str(question.conversation_id)
    assert question.content == f"Hello {CHUNKS}"
    assert question.role == "user"
    assert answer.content == answer_of(frames)
    assert answer.status == "complete"
    assert done["message_id"] == start["message_id"]
    assert done["finish_reason"] == "stop"
    assert done["usage"] == answer.usage
    assert done["usage"]["completion_tokens"] == 4
    assert done["quota"] == {
        "requests_remaining": 99,
        "tokens_remaining": None,
        "resets_at": done["quota"]["resets_at"],
    }
    assert done["quota"]["resets_at"].startswith("20")


def test_stream_is_not_compressed_even_when_the_client_asks(live_asgi, client, token):
    with stream(
        client, live_asgi.url, token.key, {"message": CHUNKS}, headers={"Accept-Encoding": "gzip, br"}
    ) as response:
        assert "content-encoding" not in response.headers
        assert [f.type for f in iter_frames(response)][-1] == "done"


def test_user_message_and_reservation_are_committed_before_start_and_first_chunk_arrives_early(
    live_asgi, client, token, user
):
    body = {"message": "slow one [mock:chunks=5][mock:delay_ms=400]"}
    with stream(client, live_asgi.url, token.key, body) as response:
        frames = iter_frames(response)
        start = next(frames).data
        # Committed before `start` was sent: visible from another connection right now.
        assert Message.objects.get(pk=start["user_message_id"]).content == body["message"]
        assert Reservation.objects.filter(quota_id=user.pk).count() == 1
        first = next(frames)
        assert first.type == "chunk"
        # The first chunk reached us while the adapter was still producing the rest.
        assert Message.objects.get(pk=start["message_id"]).status == "streaming"
        rest = list(frames)
    assert rest[-1].type == "done"
    assert Reservation.objects.filter(quota_id=user.pk).count() == 0
    assert Quota.objects.get(user=user).requests_used == 1


def test_httpx_sse_reads_the_stream_and_sees_every_event(live_asgi, client, token):
    with connect_sse(
        client,
        "POST",
        f"{live_asgi.url}/api/ai/chat/stream",
        json={"message": CHUNKS},
        headers={"Authorization": f"Token {token.key}"},
    ) as source:
        received = [(sse.event, sse.id, json.loads(sse.data)) for sse in source.iter_sse()]
    assert [event for event, _, _ in received] == ["message"] * 6  # no `event:` lines
    assert [data["type"] for _, _, data in received] == ["start"] + ["chunk"] * 4 + ["done"]
    assert [event_id for _, event_id, _ in received] == ["1", "2", "3", "4", "5", "6"]


def test_conversation_continues_and_context_holds_system_prompt_and_last_n_messages(
    asgi_server_factory, client, token
):
    server = asgi_server_factory(AI_SYSTEM_PROMPT="Be brief.", AI_CONTEXT_MESSAGES="3")
    first = events(client, server.url, token.key, {"message": f"first {CHUNKS}"})
    conversation_id = first[0].data["conversation_id"]
    frames = events(
        client,
        server.url,
        token.key,
        {"message": "second [mock:echo_context]", "conversation_id": conversation_id},
    )
    assert json.loads(answer_of(frames)) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": f"first {CHUNKS}"},
        {"role": "assistant", "content": answer_of(first)},
        {"role": "user", "content": "second [mock:echo_context]"},
    ]
    assert Message.objects.filter(conversation_id=conversation_id).count() == 4


def test_context_window_keeps_only_the_newest_messages_oldest_first(asgi_server_factory, client, token):
    server = asgi_server_factory(AI_CONTEXT_MESSAGES="2")
    first = events(client, server.url, token.key, {"message": f"one {CHUNKS}"})
    conversation_id = first[0].data["conversation_id"]
    frames = events(
        client,
        server.url,
        token.key,
        {"message": "two [mock:echo_context]", "conversation_id": conversation_id},
    )
    assert json.loads(answer_of(frames)) == [
        {"role": "assistant", "content": answer_of(first)},
        {"role": "user", "content": "two [mock:echo_context]"},
    ]


def test_keepalive_comments_flow_while_the_adapter_is_silent(asgi_server_factory, client, token):
    server = asgi_server_factory(AI_STREAM_KEEPALIVE="0.2")
    with stream(client, server.url, token.key, {"message": "[mock:chunks=2][mock:delay_ms=900]"}) as response:
        frames = list(iter_frames(response))
    kinds = [f.comment if f.data is None else f.type for f in frames]
    assert kinds[0] == "start"
    assert kinds[-1] == "done"
    assert kinds.count("keep-alive") >= 4
    assert all(len(f.raw_lines) == 1 for f in frames if f.data is None)


def test_adapter_error_mid_stream_keeps_partial_text_as_failed_and_releases_quota(
    live_asgi, client, token, user
):
    frames = events(client, live_asgi.url, token.key, {"message": "[mock:fail_after=2][mock:delay_ms=0]"})
    assert [f.type for f in frames] == ["start", "chunk", "chunk", "error"]
    error = frames[-1].data
    assert error["code"] == "adapter_error"
    assert error["retryable"] is True
    assert error["message_id"] == frames[0].data["message_id"]
    answer = Message.objects.get(pk=error["message_id"])
    assert answer.status == "failed"
    assert answer.content == answer_of(frames)
    assert answer.error == {"code": "adapter_error", "message": error["message"]}
    assert Reservation.objects.count() == 0
    assert Quota.objects.get(user=user).requests_used == 0


def stream_log_line(server, conversation_id) -> str:
    """The server's `ai.stream` line of this conversation's answer, once written. The server, and its
    log, may be shared with other tests: a line of theirs never counts."""
    return wait_for(
        lambda: next(
            (
                line
                for line in server.log().splitlines()
                if f" conversation={conversation_id} " in line and " outcome=" in line
            ),
            None,
        )
    )


def ended_answer(message_id) -> Message:
    """The answer once its end is written (after its client left, it may come a little later)."""
    return wait_for(lambda: Message.objects.filter(pk=message_id).exclude(status="streaming").first())


def _hang_up_after_chunks(server, token, body, chunks: int) -> tuple[dict, str]:
    """Read `start` and `chunks` chunks on a raw connection, then close it abruptly."""
    with httpx.Client(timeout=30) as client, stream(client, server.url, token, body) as response:
        frames = iter_frames(response)
        start = next(frames).data
        received = "".join(next(frames).data["content"] for _ in range(chunks))
    return start, received


def test_client_hang_up_leaves_the_answer_running_to_its_end_charged_once(live_asgi, token, user):
    start, received = _hang_up_after_chunks(
        live_asgi, token.key, {"message": "[mock:chunks=30][mock:delay_ms=20]"}, chunks=3
    )
    answer = ended_answer(start["message_id"])
    assert answer.status == "complete"
    assert answer.content.startswith(received)
    assert len(answer.content.split()) == 30
    assert answer.usage["completion_tokens"] == 30
    assert Reservation.objects.count() == 0
    assert Quota.objects.get(user=user).requests_used == 1


def test_client_hang_up_interrupts_the_answer_under_on_disconnect_interrupt(asgi_server_factory, token, user):
    live_asgi = asgi_server_factory(AI_STREAM_ON_DISCONNECT="interrupt")
    start, received = _hang_up_after_chunks(
        live_asgi, token.key, {"message": "[mock:chunks=100][mock:delay_ms=50]"}, chunks=2
    )
    answer = ended_answer(start["message_id"])
    assert answer.status == "interrupted"
    assert answer.content.startswith(received)
    assert len(answer.content.split()) < 100
    assert Reservation.objects.count() == 0
    assert Quota.objects.get(user=user).requests_used == 0
    assert stream_log_line(live_asgi, start["conversation_id"]).endswith("outcome=interrupted")


def test_client_hang_up_is_charged_when_quota_charge_interrupted_is_set(asgi_server_factory, token, user):
    server = asgi_server_factory(QUOTA_CHARGE_INTERRUPTED="true", AI_STREAM_ON_DISCONNECT="interrupt")
    start, _ = _hang_up_after_chunks(
        server, token.key, {"message": "[mock:chunks=100][mock:delay_ms=50]"}, chunks=1
    )
    wait_for(lambda: Message.objects.filter(pk=start["message_id"], status="interrupted").exists())
    assert Reservation.objects.count() == 0
    assert Quota.objects.get(user=user).requests_used == 1


def test_one_stream_log_line_for_operators(live_asgi, client, token):
    frames = events(client, live_asgi.url, token.key, {"message": CHUNKS})
    line = stream_log_line(live_asgi, frames[0].data["conversation_id"])
    for field in ("user=alice", "adapter=default", "chunks=4", "tokens=", "first_chunk_ms=", "duration_ms="):
        assert field in line
    assert line.endswith("outcome=complete")


def test_killed_server_leaves_streaming_answer_that_the_sweep_interrupts(asgi_server_factory, token, user):
    doomed = asgi_server_factory(fresh=True, QUOTA_RESERVATION_TTL="1")
    with (
        httpx.Client(timeout=30) as client,
        stream(
            client, doomed.url, token.key, {"message": "[mock:chunks=100][mock:delay_ms=100]"}
        ) as response,
    ):
        frames = iter_frames(response)
        start = next(frames).data
        next(frames)
        doomed.stop(sig=9)  # SIGKILL: no cleanup runs
    answer = Message.objects.get(pk=start["message_id"])
    assert answer.status == "streaming"
    assert Reservation.objects.filter(quota_id=user.pk).count() == 1
    time.sleep(1.2)  # past QUOTA_RESERVATION_TTL=1: neither was renewed
    # The sweep at server start cleans up after the dead process.
    fresh = asgi_server_factory(fresh=True, QUOTA_RESERVATION_TTL="1")
    try:
        answer.refresh_from_db()
        assert answer.status == "interrupted"
        assert Reservation.objects.filter(quota_id=user.pk).count() == 0
    finally:
        fresh.stop()


def test_a_hang_up_while_the_start_runs_still_leaves_the_answer_an_owner(
    live_asgi, token, user, test_database_url
):
    """The client leaves while its start waits (here on a lock of its quota row, held by the test):
    the start commits after the request is gone, and its answer must still be generated and saved."""
    Quota.objects.create(user=user)
    body = json.dumps({"message": "[mock:chunks=5][mock:delay_ms=10]"}).encode()
    request = (
        f"POST /api/ai/chat/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with psycopg.connect(test_database_url) as lock:
        lock.execute("SELECT 1 FROM quota_quota WHERE user_id = %s FOR UPDATE", [user.pk])
        with socket.create_connection(("127.0.0.1", live_asgi.port)) as raw:
            raw.sendall(request)
            wait_for(
                lambda: lock.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = %s",
                    [lock.info.dbname],
                ).fetchone()[0]
            )
        time.sleep(0.3)  # the server sees the hang-up and cancels the request
    answer = wait_for(lambda: Message.objects.filter(role="assistant").exclude(status="streaming").first())
    assert answer.status == "complete"
    assert answer.usage["completion_tokens"] == 5
    assert Quota.objects.get(user=user).requests_used == 1
    assert Reservation.objects.count() == 0
