"""Live answers in one server process, end to end: read again (`Last-Event-ID`), stop, one answer at a
time per conversation, `Idempotency-Key`, regenerate. A real daphne, real HTTP clients, PostgreSQL."""

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client as DjangoClient
from django.utils import timezone
from rest_framework.authtoken.models import Token

from ai.tests.sse_client import (
    aiter_frames,
    assert_json_error,
    iter_frames,
    post_together,
    stream,
)
from conversations.models import Conversation, Message
from conversations.tests.factories import ConversationFactory, MessageFactory
from quota.models import Quota, Reservation

pytestmark = pytest.mark.django_db(transaction=True)

FAST = "[mock:chunks=4][mock:delay_ms=0]"
SLOW = "[mock:chunks=30][mock:delay_ms=30]"
LONG = "[mock:chunks=100][mock:delay_ms=50]"  # five seconds: always still running when stopped


@pytest.fixture
def client():
    # A read timeout below AI_STREAM_KEEPALIVE: a stream that stalls fails the test, not hangs it.
    with httpx.Client(timeout=httpx.Timeout(30, read=10)) as client:
        yield client


@pytest.fixture
def short_replay(asgi_server_factory):
    """A server that keeps an ended answer's events for one second only."""
    return asgi_server_factory(AI_STREAM_REPLAY_TTL="1")


@pytest.fixture
def other_token(other_user):
    return Token.objects.create(user=other_user)


def auth(token: str, **headers) -> dict:
    return {"Authorization": f"Token {token}", **headers}


def answer_url(server, message_id) -> str:
    return f"{server.url}/api/ai/chat/stream/{message_id}"


def read_again(client, server, token: str, message_id, *, last_event_id=None, query=None):
    """Open `GET /api/ai/chat/stream/<message_id>` as a streaming response (a context manager)."""
    headers = auth(token) if last_event_id is None else auth(token, **{"Last-Event-ID": last_event_id})
    return client.stream("GET", answer_url(server, message_id), headers=headers, params=query)


def stop(client, server, token: str, message_id, *, headers=None, **kwargs) -> httpx.Response:
    headers = auth(token, **(headers or {}))
    return client.post(f"{answer_url(server, message_id)}/stop", headers=headers, **kwargs)


def event_frames(source: httpx.Response | Iterator) -> list:
    """The rest of a stream's event frames (keep-alive comments left out), from its response or from
    its `iter_frames` already begun."""
    frames = iter_frames(source) if isinstance(source, httpx.Response) else source
    return [frame for frame in frames if frame.data is not None]


def wire(frames) -> list[list[str]]:
    """The frames as they came over the wire: their `id:` and `data:` lines, byte for byte."""
    return [frame.raw_lines for frame in frames]


def text_of(frames) -> str:
    return "".join(frame.data["content"] for frame in frames if frame.type == "chunk")


def post_events(client, server, token: str, body: dict, **headers) -> list:
    """A whole `POST /api/ai/chat/stream`, checked to be a stream: its event frames."""
    with stream(client, server.url, token, body, headers=headers) as response:
        assert response.status_code == 200, response.read()
        return event_frames(response)


def assert_nothing_held(*, besides=(), timeout: float = 10.0) -> None:
    """No quota reservation held and no answer left `streaming` (besides the rows a test made so);
    waits a little, as an end may be written after the client has left."""
    deadline = time.monotonic() + timeout
    while True:
        reservations = list(Reservation.objects.values_list("id", flat=True))
        streaming = list(
            Message.objects.filter(status=Message.Status.STREAMING)
            .exclude(pk__in=besides)
            .values_list("id", flat=True)
        )
        if not reservations and not streaming:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: reservations {reservations}, streaming answers {streaming}")
        time.sleep(0.05)


def quota_of(user) -> tuple[int, int]:
    quota = Quota.objects.get(user=user)
    return quota.requests_used, quota.tokens_used


# --- read again: GET /api/ai/chat/stream/<message_id> --------------------------------------------
@pytest.mark.parametrize("how", ["header", "query"])
def test_read_again_mid_answer_gets_the_same_events_after_last_event_id_then_the_live_ones(
    live_asgi, client, token, how
):
    with stream(client, live_asgi.url, token.key, {"message": f"read me again {SLOW}"}) as post:
        frames = iter_frames(post)
        seen = [next(frames) for _ in range(5)]  # start and four chunks
        message_id = seen[0].data["message_id"]
        reader = (
            read_again(client, live_asgi, token.key, message_id, last_event_id="5")
            if how == "header"
            else read_again(client, live_asgi, token.key, message_id, query={"last_event_id": "5"})
        )
        with reader as again:
            assert again.status_code == 200
            assert again.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert Message.objects.get(pk=message_id).status == "streaming", "read while it runs"
            read = event_frames(again)
        posted = seen + event_frames(frames)

    assert [frame.type for frame in posted] == ["start"] + ["chunk"] * 30 + ["done"]
    assert read[0].id == "6"
    assert wire(read) == wire(posted[5:])
    assert Message.objects.get(pk=message_id).content == text_of(posted)
    assert_nothing_held()


def test_read_again_without_last_event_id_gets_every_event_from_id_1_while_it_runs_and_after(
    live_asgi, client, token
):
    with stream(client, live_asgi.url, token.key, {"message": f"from the start {SLOW}"}) as post:
        frames = iter_frames(post)
        seen = [next(frames) for _ in range(3)]
        message_id = seen[0].data["message_id"]
        with read_again(client, live_asgi, token.key, message_id) as again:
            assert again.status_code == 200
            while_running = event_frames(again)
        posted = seen + event_frames(frames)
    with read_again(client, live_asgi, token.key, message_id) as again:
        assert again.status_code == 200
        after_the_end = event_frames(again)

    assert [frame.id for frame in posted] == [str(n) for n in range(1, 33)]
    assert wire(while_running) == wire(posted)
    assert wire(after_the_end) == wire(posted)
    assert_nothing_held()


async def read_together(server, token: str, message: str, *, afters: list[int]):
    """Post `message` and, once its `start` arrived, read the answer again with one reader per value of
    `afters` (its Last-Event-ID, 0: none), all at once; return the POST's events and each reader's
    (status, events)."""
    limits = httpx.Limits(max_connections=len(afters) + 10, max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(timeout=60, limits=limits) as http,
        http.stream(
            "POST", f"{server.url}/api/ai/chat/stream", json={"message": message}, headers=auth(token)
        ) as post,
    ):
        frames = aiter_frames(post)
        start = await anext(frames)
        url = answer_url(server, start.data["message_id"])

        async def reader(after: int):
            headers = auth(token, **({"Last-Event-ID": str(after)} if after else {}))
            async with http.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    return response.status_code, (await response.aread()).decode()
                return 200, [f async for f in aiter_frames(response) if f.data is not None]

        readers = asyncio.gather(*(reader(after) for after in afters))
        posted = [start] + [f async for f in frames if f.data is not None]
        return posted, await readers


def test_several_readers_at_once_all_see_the_sequence_the_post_saw(live_asgi, token):
    afters = [0, 0, 0, 2, 5]
    posted, reads = asyncio.run(read_together(live_asgi, token.key, f"many readers {SLOW}", afters=afters))
    assert posted[-1].data["type"] == "done", posted[-1].data
    assert len(posted) == 32
    for after, (status, read) in zip(afters, reads, strict=True):
        assert status == 200
        assert wire(read) == wire(posted[after:]), f"the reader after {after}"
    assert_nothing_held()


def test_more_readers_than_database_connections_all_read_the_answer_to_its_end(asgi_server_factory, token):
    """A reader holds no database connection while it reads: a pool of 4 serves 10 readers, and the
    answer's end is still written."""
    server = asgi_server_factory(
        DATABASE_POOL_MAX_SIZE="4", DATABASE_POOL_TIMEOUT="3", DATABASE_RETRY_SECONDS="3"
    )
    afters = [0] * 10
    posted, reads = asyncio.run(read_together(server, token.key, f"crowd {SLOW}", afters=afters))
    assert [status for status, _ in reads] == [200] * 10
    assert posted[-1].data["type"] == "done", posted[-1].data
    for _, read in reads:
        assert wire(read) == wire(posted)
    assert_nothing_held()


def test_a_reader_leaving_changes_nothing_for_the_answer_even_under_on_disconnect_interrupt(
    asgi_server_factory, client, token, user
):
    server = asgi_server_factory(AI_STREAM_ON_DISCONNECT="interrupt")
    with stream(client, server.url, token.key, {"message": f"stay {SLOW}"}) as post:
        frames = iter_frames(post)
        message_id = next(frames).data["message_id"]
        with httpx.Client(timeout=30) as tab, read_again(tab, server, token.key, message_id) as leaving:
            left = iter_frames(leaving)
            assert [next(left).type for _ in range(3)] == ["start", "chunk", "chunk"]
        # That reader's connection is closed; the POST reads on to the end.
        posted = event_frames(frames)
    assert posted[-1].data["finish_reason"] == "stop"
    answer = Message.objects.get(pk=message_id)
    assert answer.status == "complete"
    assert len(answer.content.split()) == 30
    assert quota_of(user)[0] == 1
    assert_nothing_held()


def test_a_reader_gets_keep_alive_comments_while_the_answer_is_silent(asgi_server_factory, client, token):
    server = asgi_server_factory(AI_STREAM_KEEPALIVE="0.2")
    with stream(client, server.url, token.key, {"message": "[mock:chunks=2][mock:delay_ms=900]"}) as post:
        frames = iter_frames(post)
        message_id = next(frames).data["message_id"]
        with read_again(client, server, token.key, message_id, last_event_id="1") as again:
            read = list(iter_frames(again))
        event_frames(frames)
    kinds = [frame.comment if frame.data is None else frame.type for frame in read]
    assert kinds[-1] == "done"
    assert kinds.count("chunk") == 2
    assert kinds.count("keep-alive") >= 4
    assert all(frame.raw_lines == [": keep-alive"] for frame in read if frame.data is None)
    assert_nothing_held()


def test_a_reload_after_the_post_hung_up_reads_the_whole_answer_again(live_asgi, token, user):
    with httpx.Client(timeout=30) as tab, stream(tab, live_asgi.url, token.key, {"message": SLOW}) as post:
        frames = iter_frames(post)
        seen = [next(frames) for _ in range(4)]
    message_id = seen[0].data["message_id"]  # the POST's connection is closed: the page reloads
    with httpx.Client(timeout=30) as reloaded:
        with read_again(reloaded, live_asgi, token.key, message_id, last_event_id=seen[-1].id) as again:
            rest = event_frames(again)
        with read_again(reloaded, live_asgi, token.key, message_id) as again:
            everything = event_frames(again)
    assert wire(everything[:4]) == wire(seen)
    assert wire(everything[4:]) == wire(rest)
    assert rest[-1].data["finish_reason"] == "stop"
    assert Message.objects.get(pk=message_id).content == text_of(everything)
    assert quota_of(user)[0] == 1
    assert_nothing_held()


def test_read_again_after_the_replay_ttl_is_204_with_no_body(short_replay, client, token):
    posted = post_events(client, short_replay, token.key, {"message": FAST})
    message_id = posted[0].data["message_id"]
    with read_again(client, short_replay, token.key, message_id) as again:
        assert again.status_code == 200, "still kept right after its end"
        assert wire(event_frames(again)) == wire(posted)

    time.sleep(1.5)  # past AI_STREAM_REPLAY_TTL=1
    gone = client.get(answer_url(short_replay, message_id), headers=auth(token.key))
    assert gone.status_code == 204
    assert gone.content == b""
    assert Message.objects.get(pk=message_id).status == "complete"


@pytest.mark.parametrize(
    "left",
    [
        pytest.param({"status": "complete", "age": 0}, id="complete-in-another-process-life"),
        pytest.param({"status": "streaming", "age": 0}, id="streaming-owned-by-no-process"),
        pytest.param({"status": "streaming", "age": 700}, id="streaming-stale"),
    ],
)
def test_read_again_of_an_answer_this_process_does_not_keep_is_204(live_asgi, client, token, user, left):
    old = timezone.now() - timedelta(seconds=left["age"])
    conversation = ConversationFactory(user=user)
    MessageFactory(conversation=conversation, created_at=old)
    answer = MessageFactory(
        conversation=conversation, role="assistant", status=left["status"], created_at=old, position=1
    )
    response = client.get(answer_url(live_asgi, answer.pk), headers=auth(token.key))
    assert response.status_code == 204
    assert response.content == b""


def test_read_again_is_a_404_json_for_another_users_answer_a_user_message_and_an_unknown_id(
    live_asgi, client, token, other_token
):
    theirs = post_events(client, live_asgi, other_token.key, {"message": FAST})[0].data
    mine = post_events(client, live_asgi, token.key, {"message": FAST})[0].data
    for message_id in (theirs["message_id"], mine["user_message_id"], uuid.uuid4()):
        response = client.get(answer_url(live_asgi, message_id), headers=auth(token.key))
        assert_json_error(response, 404, "not_found")
    with read_again(client, live_asgi, token.key, mine["message_id"]) as again:
        assert again.status_code == 200, "the caller's own answer is readable"
    assert_nothing_held()


def test_read_again_needs_credentials(live_asgi, client, token):
    message_id = post_events(client, live_asgi, token.key, {"message": FAST})[0].data["message_id"]
    response = client.get(answer_url(live_asgi, message_id))
    assert_json_error(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Token"


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "0x10", "1e3", "1 2", "٣"])
@pytest.mark.parametrize("how", ["header", "query"])
def test_read_again_with_a_bad_last_event_id_is_a_400_json(live_asgi, client, token, how, value):
    message_id = post_events(client, live_asgi, token.key, {"message": FAST})[0].data["message_id"]
    if how == "header":
        response = client.get(
            answer_url(live_asgi, message_id), headers=auth(token.key, **{"Last-Event-ID": value.encode()})
        )
    else:
        response = client.get(
            answer_url(live_asgi, message_id), headers=auth(token.key), params={"last_event_id": value}
        )
    body = assert_json_error(response, 400, "invalid")
    assert "last_event_id" in body["errors"]


def test_read_again_from_the_last_event_of_an_ended_answer_ends_at_once_with_no_event(live_asgi, token):
    """An EventSource that got `done` and reconnects sends the done's id: nothing is left to send, so the
    answer must end (200 with no event, or 204), not hold the connection open with keep-alives."""
    with httpx.Client(timeout=30) as client:
        posted = post_events(client, live_asgi, token.key, {"message": FAST})
    message_id, last = posted[0].data["message_id"], posted[-1].id
    # A read timeout well below AI_STREAM_KEEPALIVE (15 s): an answer that waits for news times out.
    with httpx.Client(timeout=httpx.Timeout(30, read=5)) as client:
        for after in (last, str(int(last) + 10)):
            try:
                with read_again(client, live_asgi, token.key, message_id, last_event_id=after) as again:
                    frames = list(iter_frames(again))
            except httpx.ReadTimeout:
                pytest.fail(f"Last-Event-ID {after} (the done is {last}): the stream never ended")
            assert again.status_code in (200, 204)
            assert frames == []


# --- stop: POST /api/ai/chat/stream/<message_id>/stop ---------------------------------------------
def test_stop_mid_answer_ends_every_reader_with_done_stopped_keeps_the_text_and_charges_its_usage(
    live_asgi, client, token, user
):
    with stream(client, live_asgi.url, token.key, {"message": f"stop me {LONG}"}) as post:
        frames = iter_frames(post)
        seen = [next(frames) for _ in range(4)]
        message_id = seen[0].data["message_id"]
        with (
            httpx.Client(timeout=30) as other_tab,
            read_again(other_tab, live_asgi, token.key, message_id, last_event_id="2") as again,
        ):
            assert again.status_code == 200
            stopped = stop(client, live_asgi, token.key, message_id)
            read = event_frames(again)
        posted = seen + event_frames(frames)

    assert stopped.status_code == 200, stopped.text
    message = stopped.json()
    answer = Message.objects.get(pk=message_id)
    assert (message["id"], message["role"], message["status"]) == (message_id, "assistant", "stopped")
    assert answer.status == "stopped"
    assert message["content"] == answer.content == text_of(posted)
    assert 3 <= len(answer.content.split()) < 100, "partial text kept"
    assert message["usage"] == answer.usage
    assert answer.usage["total_tokens"] > 0
    done = posted[-1].data
    assert done["type"] == "done"
    assert done["finish_reason"] == "stopped"
    assert done["usage"] == answer.usage
    assert wire(read) == wire(posted[2:]), "the other reader saw the same events and the same end"
    assert quota_of(user) == (1, answer.usage["total_tokens"])
    assert_nothing_held()


def test_stopping_an_ended_answer_is_a_harmless_200_with_its_final_status(live_asgi, client, token, user):
    posted = post_events(client, live_asgi, token.key, {"message": FAST})
    message_id = posted[0].data["message_id"]
    charged = quota_of(user)

    stopped = stop(client, live_asgi, token.key, message_id)
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "complete"
    assert stopped.json()["content"] == text_of(posted)
    assert Message.objects.get(pk=message_id).status == "complete"
    assert quota_of(user) == charged

    with read_again(client, live_asgi, token.key, message_id) as again:
        assert wire(event_frames(again)) == wire(posted), "its events are unchanged"
    assert_nothing_held()


def test_stopping_twice_is_harmless(live_asgi, client, token, user):
    with stream(client, live_asgi.url, token.key, {"message": LONG}) as post:
        frames = iter_frames(post)
        message_id = next(frames).data["message_id"]
        next(frames)
        first = stop(client, live_asgi, token.key, message_id)
        posted = event_frames(frames)
    second = stop(
        client,
        live_asgi,
        token.key,
        message_id,
        content=b"<any body>",
        headers={"Content-Type": "text/plain"},
    )
    assert (first.status_code, second.status_code) == (200, 200), "a body is ignored"
    assert first.json() == second.json()
    assert second.json()["status"] == "stopped"
    assert posted[-1].data["finish_reason"] == "stopped"
    assert quota_of(user)[0] == 1
    assert_nothing_held()


def test_stop_of_an_answer_no_process_runs_is_202_with_the_message_as_it_is(live_asgi, client, token, user):
    conversation = ConversationFactory(user=user)
    MessageFactory(conversation=conversation)
    orphan = MessageFactory(conversation=conversation, role="assistant", status="streaming", content="so far")
    response = stop(client, live_asgi, token.key, orphan.pk)
    assert response.status_code == 202, response.text
    assert (response.json()["status"], response.json()["content"]) == ("streaming", "so far")


def test_stop_needs_credentials_and_is_404_for_another_users_answer_which_runs_on(
    live_asgi, client, token, other_token
):
    with stream(client, live_asgi.url, other_token.key, {"message": SLOW}) as post:
        frames = iter_frames(post)
        message_id = next(frames).data["message_id"]
        anonymous = client.post(f"{answer_url(live_asgi, message_id)}/stop")
        assert_json_error(anonymous, 401, "not_authenticated")
        assert anonymous.headers["www-authenticate"] == "Token"
        assert_json_error(stop(client, live_asgi, token.key, message_id), 404, "not_found")
        assert_json_error(stop(client, live_asgi, token.key, uuid.uuid4()), 404, "not_found")
        posted = event_frames(frames)
    assert posted[-1].data["finish_reason"] == "stop"
    assert Message.objects.get(pk=message_id).status == "complete"
    assert_nothing_held()


@pytest.fixture
def session(user):
    """The cookies of a logged-in session of `user` with a CSRF cookie, and that CSRF token."""
    django_client = DjangoClient()
    django_client.force_login(user)
    csrf = _get_new_csrf_string()
    session_id = django_client.cookies[settings.SESSION_COOKIE_NAME].value
    return {settings.SESSION_COOKIE_NAME: session_id, settings.CSRF_COOKIE_NAME: csrf}, csrf


def test_a_session_stop_needs_the_csrf_token(live_asgi, client, token, session):
    cookies, csrf = session
    with stream(client, live_asgi.url, token.key, {"message": LONG}) as post:
        frames = iter_frames(post)
        message_id = next(frames).data["message_id"]
        url = f"{answer_url(live_asgi, message_id)}/stop"
        with httpx.Client(timeout=30, cookies=cookies) as browser:
            refused = browser.post(url)
            assert_json_error(refused, 403, "permission_denied")
            assert Message.objects.get(pk=message_id).status == "streaming"
            accepted = browser.post(url, headers={"X-CSRFToken": csrf, "Referer": f"{live_asgi.url}/"})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["status"] == "stopped"
        assert event_frames(frames)[-1].data["finish_reason"] == "stopped"
    assert_nothing_held()


# --- one answer at a time per conversation --------------------------------------------------------
def test_a_second_message_while_the_answer_streams_is_409_and_stores_and_reserves_nothing(
    live_asgi, client, token, user
):
    with stream(client, live_asgi.url, token.key, {"message": f"first {SLOW}"}) as post:
        frames = iter_frames(post)
        start = next(frames).data
        conversation_id = start["conversation_id"]
        second = {"message": f"second {FAST}", "conversation_id": conversation_id}
        with httpx.Client(timeout=30) as other_tab:
            refused = other_tab.post(
                f"{live_asgi.url}/api/ai/chat/stream", json=second, headers=auth(token.key)
            )
        assert_json_error(refused, 409, "stream_in_progress")
        assert Message.objects.filter(conversation_id=conversation_id).count() == 2
        assert Reservation.objects.count() == 1, "only the running answer's reservation"
        assert event_frames(frames)[-1].type == "done"

    posted = post_events(client, live_asgi, token.key, second)
    assert posted[-1].type == "done", "once the answer ended the conversation takes messages again"
    assert Message.objects.filter(conversation_id=conversation_id).count() == 4
    assert quota_of(user)[0] == 2
    assert_nothing_held()


def test_messages_sent_at_once_to_one_conversation_start_one_answer_also_as_a_users_first(
    live_asgi, token, user
):
    """Ten messages at once to one conversation, by a user without a quota row yet (their first
    reservation creates it): one answer streams, the others are 409 — the conversation's lock is held
    until the start's one statement has made its writes, the quota row's creation included."""
    conversation = ConversationFactory(user=user)
    assert not Quota.objects.filter(user=user).exists()
    body = {"message": f"at once {SLOW}", "conversation_id": str(conversation.pk)}
    results = asyncio.run(post_together(live_asgi.url, token.key, body, count=10))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * 9, statuses
    assert Message.objects.filter(conversation=conversation).count() == 2
    assert quota_of(user)[0] == 1
    assert_nothing_held()


def test_a_stale_streaming_answer_does_not_block_a_new_message(live_asgi, client, token, user):
    long_ago = timezone.now() - timedelta(seconds=settings.QUOTA_RESERVATION_TTL + 60)
    conversation = ConversationFactory(user=user)
    MessageFactory(conversation=conversation, created_at=long_ago)
    stale = MessageFactory(
        conversation=conversation, role="assistant", status="streaming", created_at=long_ago, position=1
    )
    posted = post_events(
        client, live_asgi, token.key, {"message": FAST, "conversation_id": str(conversation.pk)}
    )
    assert posted[-1].type == "done"
    assert Message.objects.get(pk=posted[0].data["message_id"]).status == "complete"
    assert_nothing_held(besides=[stale.pk])


# --- Idempotency-Key ------------------------------------------------------------------------------
@pytest.mark.parametrize("conversation", ["new", "existing"])
def test_twenty_identical_requests_with_one_key_at_once_start_one_answer_charged_once(
    live_asgi, client, token, user, conversation
):
    body = {"message": "only once [mock:chunks=6][mock:delay_ms=50]"}
    before = 0
    if conversation == "existing":
        earlier = post_events(client, live_asgi, token.key, {"message": FAST})
        body["conversation_id"] = earlier[0].data["conversation_id"]
        before = 1
    results = asyncio.run(
        post_together(live_asgi.url, token.key, body, count=20, headers={"Idempotency-Key": "send-1"})
    )
    assert [status for status, _ in results] == [200] * 20, "a retry is neither a 409 nor an error"
    first = results[0][1]
    assert [frame.type for frame in first] == ["start"] + ["chunk"] * 6 + ["done"]
    for _, frames in results:
        assert wire(frames) == wire(first)
    assert Message.objects.filter(role="user").count() == before + 1
    assert Message.objects.filter(role="assistant").count() == before + 1
    assert Conversation.objects.count() == 1
    assert Message.objects.get(pk=first[0].data["message_id"]).content == text_of(first)
    assert quota_of(user)[0] == before + 1
    assert_nothing_held()


def test_more_retries_than_database_connections_all_replay_the_running_answer(
    asgi_server_factory, token, user
):
    """A retry holds no database connection while it replays the answer: a pool of 4 serves 10."""
    server = asgi_server_factory(
        DATABASE_POOL_MAX_SIZE="4", DATABASE_POOL_TIMEOUT="3", DATABASE_RETRY_SECONDS="3"
    )
    body, key = {"message": f"crowd of retries {SLOW}"}, {"Idempotency-Key": "crowd"}

    async def scenario():
        async with (
            httpx.AsyncClient(timeout=60) as http,
            http.stream(
                "POST", f"{server.url}/api/ai/chat/stream", json=body, headers=auth(token.key, **key)
            ) as post,
        ):
            frames = aiter_frames(post)
            start = await anext(frames)
            retries = asyncio.ensure_future(post_together(server.url, token.key, body, count=10, headers=key))
            posted = [start] + [f async for f in frames if f.data is not None]
            return posted, await retries

    posted, retries = asyncio.run(scenario())
    assert [status for status, _ in retries] == [200] * 10
    assert posted[-1].data["type"] == "done", posted[-1].data
    for _, frames in retries:
        assert wire(frames) == wire(posted)
    assert Message.objects.count() == 2
    assert quota_of(user)[0] == 1
    assert_nothing_held()


def test_a_retry_while_the_answer_is_kept_gets_its_events_from_the_first_and_charges_nothing(
    live_asgi, client, token, user
):
    body, key = {"message": f"retry me {SLOW}"}, {"Idempotency-Key": "retry-while-kept"}
    with stream(client, live_asgi.url, token.key, body, headers=key) as post:
        frames = iter_frames(post)
        seen = [next(frames) for _ in range(4)]
        during = post_events(client, live_asgi, token.key, body, **key)
        posted = seen + event_frames(frames)
    after = post_events(client, live_asgi, token.key, body, **key)

    assert wire(during) == wire(posted)
    assert wire(after) == wire(posted)
    assert Message.objects.count() == 2
    assert quota_of(user)[0] == 1
    assert_nothing_held()


def test_a_retry_after_the_replay_window_gets_the_stored_answer_as_a_short_stream(
    short_replay, client, token, user
):
    body, key = {"message": "stored [mock:chunks=5][mock:delay_ms=0]"}, {"Idempotency-Key": "late-retry"}
    posted = post_events(client, short_replay, token.key, body, **key)
    charged = quota_of(user)
    time.sleep(1.5)  # past AI_STREAM_REPLAY_TTL=1
    retried = post_events(client, short_replay, token.key, body, **key)

    answer = Message.objects.get(role="assistant")
    assert [frame.type for frame in retried] == ["start", "chunk", "done"]
    assert [frame.id for frame in retried] == ["1", "2", "3"]
    assert retried[0].data == posted[0].data
    assert retried[1].data["content"] == answer.content == text_of(posted)
    done = retried[2].data
    assert (done["message_id"], done["finish_reason"], done["usage"]) == (
        str(answer.pk),
        "stop",
        answer.usage,
    )
    assert done["quota"] == posted[-1].data["quota"]
    assert Message.objects.count() == 2
    assert quota_of(user) == charged
    assert_nothing_held()


def test_a_retry_of_a_stopped_answers_key_after_the_replay_window_gets_done_stopped(
    short_replay, client, token, user
):
    body, key = {"message": LONG}, {"Idempotency-Key": "stopped-once"}
    with stream(client, short_replay.url, token.key, body, headers=key) as post:
        frames = iter_frames(post)
        message_id = next(frames).data["message_id"]
        first_chunk = next(frames)
        assert stop(client, short_replay, token.key, message_id).status_code == 200
        posted = [first_chunk, *event_frames(frames)]
    charged = quota_of(user)
    time.sleep(1.5)  # past AI_STREAM_REPLAY_TTL=1
    retried = post_events(client, short_replay, token.key, body, **key)

    answer = Message.objects.get(pk=message_id)
    assert [frame.type for frame in retried] == ["start", "chunk", "done"]
    assert retried[1].data["content"] == answer.content == text_of(posted)
    assert retried[2].data["finish_reason"] == "stopped"
    assert retried[2].data["usage"] == answer.usage == posted[-1].data["usage"]
    assert quota_of(user) == charged
    assert_nothing_held()


def test_a_key_older_than_the_idempotency_ttl_starts_a_new_answer(asgi_server_factory, client, token, user):
    server = asgi_server_factory(AI_IDEMPOTENCY_TTL="1")
    body, key = {"message": FAST}, {"Idempotency-Key": "short-lived"}
    first = post_events(client, server, token.key, body, **key)
    time.sleep(1.5)  # past AI_IDEMPOTENCY_TTL=1
    second = post_events(client, server, token.key, body, **key)
    assert second[-1].type == "done"
    assert second[0].data["message_id"] != first[0].data["message_id"]
    assert Message.objects.filter(role="user").count() == 2
    assert quota_of(user)[0] == 2
    third = post_events(client, server, token.key, body, **key)
    assert wire(third) == wire(second), "the key now names the new answer"
    assert_nothing_held()


def test_a_retry_of_a_failed_answers_key_gets_the_short_stream_with_its_stored_error(
    short_replay, client, token, user
):
    body, key = {"message": "[mock:fail_after=2][mock:delay_ms=0]"}, {"Idempotency-Key": "failed-once"}
    posted = post_events(client, short_replay, token.key, body, **key)
    assert [frame.type for frame in posted] == ["start", "chunk", "chunk", "error"]
    time.sleep(1.5)  # past AI_STREAM_REPLAY_TTL=1
    retried = post_events(client, short_replay, token.key, body, **key)

    answer = Message.objects.get(role="assistant")
    assert [frame.type for frame in retried] == ["start", "chunk", "error"]
    assert retried[1].data["content"] == answer.content == text_of(posted)
    error = retried[2].data
    assert error == {
        "type": "error",
        "code": "adapter_error",
        "message": answer.error_message,
        "retryable": True,
        "message_id": str(answer.pk),
    }
    assert error == posted[-1].data
    assert Message.objects.count() == 2
    assert Quota.objects.get(user=user).requests_used == 0
    assert_nothing_held()


def test_the_same_key_with_another_body_is_422_and_stores_nothing(live_asgi, client, token, user):
    key = {"Idempotency-Key": "one-body-only"}
    first = post_events(client, live_asgi, token.key, {"message": FAST}, **key)
    conversation_id = first[0].data["conversation_id"]
    for other in (
        {"message": f"another {FAST}"},
        {"message": FAST, "conversation_id": conversation_id},
        {"message": FAST, "adapter": "default"},
    ):
        refused = client.post(
            f"{live_asgi.url}/api/ai/chat/stream", json=other, headers=auth(token.key, **key)
        )
        assert_json_error(refused, 422, "idempotency_key_mismatch")
    assert Message.objects.count() == 2
    assert Conversation.objects.count() == 1
    assert quota_of(user)[0] == 1
    assert_nothing_held()


def test_idempotency_keys_are_per_user(live_asgi, client, token, other_token, user, other_user):
    body, key = {"message": FAST}, {"Idempotency-Key": "shared-key"}
    mine = post_events(client, live_asgi, token.key, body, **key)
    theirs = post_events(client, live_asgi, other_token.key, body, **key)

    assert theirs[-1].type == "done"
    assert theirs[0].data["message_id"] != mine[0].data["message_id"]
    assert Conversation.objects.get(pk=theirs[0].data["conversation_id"]).user == other_user
    assert Message.objects.filter(role="user").count() == 2
    assert quota_of(user)[0] == quota_of(other_user)[0] == 1
    assert_nothing_held()


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"k" * 256, id="256-characters"),
        pytest.param("ключ".encode(), id="non-ascii"),
        pytest.param(b"a\x01b", id="control-character"),
        pytest.param(b"a\x7fb", id="delete-character"),
        pytest.param(b"a\tb", id="tab"),
    ],
)
def test_a_bad_idempotency_key_is_400_naming_it_and_stores_nothing(live_asgi, client, token, user, key):
    response = client.post(
        f"{live_asgi.url}/api/ai/chat/stream",
        json={"message": FAST},
        headers={"Authorization": f"Token {token.key}", "Idempotency-Key": key},
    )
    body = assert_json_error(response, 400, "invalid")
    assert "idempotency_key" in body["errors"]
    assert Message.objects.count() == 0
    assert not Quota.objects.filter(user=user, requests_used__gt=0).exists()
    assert Reservation.objects.count() == 0


def test_a_key_of_255_printable_characters_is_accepted(live_asgi, client, token):
    key = ("~ !" + "k" * 252).encode()
    assert len(key) == 255
    body = {"message": FAST}
    first = post_events(client, live_asgi, token.key, body, **{"Idempotency-Key": key})
    again = post_events(client, live_asgi, token.key, body, **{"Idempotency-Key": key})
    assert wire(again) == wire(first)
    assert Message.objects.count() == 2
    assert_nothing_held()


def test_a_retry_after_its_answer_was_regenerated_starts_nothing(live_asgi, client, token, user):
    """The key is kept with its user message (API.md): replacing the answer does not free it."""
    body, key = {"message": FAST}, {"Idempotency-Key": "before-regenerate"}
    first = post_events(client, live_asgi, token.key, body, **key)
    conversation_id = first[0].data["conversation_id"]
    post_events(client, live_asgi, token.key, {"conversation_id": conversation_id, "regenerate": True})
    charged = quota_of(user)

    with stream(client, live_asgi.url, token.key, body, headers=key) as retry:
        retry.read()
    assert Message.objects.filter(role="user").count() == 1, "the retry added a user message"
    assert Conversation.objects.count() == 1
    assert quota_of(user) == charged
    assert_nothing_held()


# --- regenerate -----------------------------------------------------------------------------------
def test_regenerate_replaces_the_last_answer_without_sending_it_as_context_and_charges_it(
    live_asgi, client, token, user
):
    first = post_events(client, live_asgi, token.key, {"message": f"first {FAST}"})
    conversation_id = first[0].data["conversation_id"]
    question = "second [mock:echo_context][mock:delay_ms=20]"
    replaced = post_events(
        client, live_asgi, token.key, {"message": question, "conversation_id": conversation_id}
    )
    old_id, old_text = replaced[0].data["message_id"], text_of(replaced)
    expected_context = [
        {"role": "user", "content": f"first {FAST}"},
        {"role": "assistant", "content": text_of(first)},
        {"role": "user", "content": question},
    ]
    assert json.loads(old_text) == expected_context

    body = {"conversation_id": conversation_id, "regenerate": True}
    with stream(client, live_asgi.url, token.key, body) as response:
        assert response.status_code == 200
        frames = iter_frames(response)
        start = next(frames)
        assert Reservation.objects.filter(quota_id=user.pk).count() == 1, "reserved like any answer"
        regenerated = [start, *event_frames(frames)]

    assert regenerated[-1].data["finish_reason"] == "stop"
    assert start.data["user_message_id"] == replaced[0].data["user_message_id"]
    assert start.data["conversation_id"] == conversation_id
    assert not Message.objects.filter(pk=old_id).exists(), "the old answer row is deleted"
    context = json.loads(text_of(regenerated))
    assert context == expected_context
    assert {"role": "assistant", "content": old_text} not in context
    messages = list(Message.objects.filter(conversation_id=conversation_id).values_list("role", "id"))
    assert [role for role, _ in messages] == ["user", "assistant", "user", "assistant"]
    assert str(messages[-1][1]) == start.data["message_id"]
    tokens = sum(frames[-1].data["usage"]["total_tokens"] for frames in (first, replaced, regenerated))
    assert quota_of(user) == (3, tokens)
    assert_nothing_held()


def test_regenerate_over_quota_is_429_and_keeps_the_last_answer(live_asgi, client, token, user):
    Quota.objects.create(user=user, request_limit=1)
    first = post_events(client, live_asgi, token.key, {"message": FAST})
    conversation_id, answer_id = first[0].data["conversation_id"], first[0].data["message_id"]
    refused = client.post(
        f"{live_asgi.url}/api/ai/chat/stream",
        json={"conversation_id": conversation_id, "regenerate": True},
        headers=auth(token.key),
    )
    assert_json_error(refused, 429, "quota_exceeded")
    assert Message.objects.get(pk=answer_id).content == text_of(first)
    assert Message.objects.count() == 2
    assert_nothing_held()


def test_regenerate_while_the_answer_streams_is_409_and_keeps_it(live_asgi, client, token):
    with stream(client, live_asgi.url, token.key, {"message": SLOW}) as post:
        frames = iter_frames(post)
        start = next(frames).data
        with httpx.Client(timeout=30) as other_tab:
            refused = other_tab.post(
                f"{live_asgi.url}/api/ai/chat/stream",
                json={"conversation_id": start["conversation_id"], "regenerate": True},
                headers=auth(token.key),
            )
        assert_json_error(refused, 409, "stream_in_progress")
        assert Reservation.objects.count() == 1
        posted = event_frames(frames)
    assert posted[-1].type == "done"
    assert Message.objects.get(pk=start["message_id"]).status == "complete"
    assert_nothing_held()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"regenerate": True}, "conversation_id", id="without-conversation"),
        pytest.param(
            {"regenerate": True, "conversation_id": None}, "conversation_id", id="null-conversation"
        ),
        pytest.param(
            {"regenerate": True, "message": "again", "conversation_id": ...}, "message", id="with-a-message"
        ),
        pytest.param({"regenerate": "yes", "conversation_id": ...}, "regenerate", id="not-a-boolean"),
        pytest.param({"regenerate": 1, "conversation_id": ...}, "regenerate", id="a-number"),
    ],
)
def test_a_malformed_regenerate_is_400_naming_the_field(live_asgi, client, token, user, body, field):
    conversation_id = post_events(client, live_asgi, token.key, {"message": FAST})[0].data["conversation_id"]
    body = {name: conversation_id if value is ... else value for name, value in body.items()}
    response = client.post(f"{live_asgi.url}/api/ai/chat/stream", json=body, headers=auth(token.key))
    errors = assert_json_error(response, 400, "invalid")["errors"]
    assert field in errors
    assert Message.objects.count() == 2
    assert quota_of(user)[0] == 1
    assert_nothing_held()


def test_regenerate_of_a_conversation_without_a_user_message_is_409_nothing_to_regenerate(
    live_asgi, client, token, user
):
    created = client.post(
        f"{live_asgi.url}/api/conversations/", json={"title": "empty"}, headers=auth(token.key)
    )
    assert created.status_code == 201, created.text
    refused = client.post(
        f"{live_asgi.url}/api/ai/chat/stream",
        json={"conversation_id": created.json()["id"], "regenerate": True},
        headers=auth(token.key),
    )
    assert_json_error(refused, 409, "nothing_to_regenerate")
    assert Message.objects.count() == 0
    assert not Quota.objects.filter(requests_used__gt=0).exists()
    assert_nothing_held()


def test_regenerate_of_another_users_conversation_is_404_and_keeps_its_answer(
    live_asgi, client, token, other_token
):
    theirs = post_events(client, live_asgi, other_token.key, {"message": FAST})[0].data
    refused = client.post(
        f"{live_asgi.url}/api/ai/chat/stream",
        json={"conversation_id": theirs["conversation_id"], "regenerate": True},
        headers=auth(token.key),
    )
    assert_json_error(refused, 404, "not_found")
    assert Message.objects.filter(pk=theirs["message_id"], status="complete").exists()
    assert Message.objects.count() == 2
    assert_nothing_held()
