"""The AI SDK's HTTP endpoints (`/api/ai/chat…`) end to end: a real daphne, httpx, PostgreSQL.

The same checks as the rest of the API, before any byte of a stream; the UI message stream itself;
reconnect, stop and the initial messages. (The real AI SDK client: test_ai_sdk_clients.py.)
"""

import json
import uuid

import httpx
import pytest

from ai.sdk_serializers import conversation_id_for
from ai.tests.sse_client import wait_for
from ai.tests.test_stream_errors import assert_error
from conversations.models import Conversation, Message
from quota.models import Quota, Reservation

pytestmark = pytest.mark.django_db(transaction=True)

FAST = "[mock:chunks=4][mock:delay_ms=0]"
SLOW = "[mock:chunks=40][mock:delay_ms=100]"


def chat_body(text: str, chat_id: str = "chat-1", **extra) -> dict:
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat_id, "messages": [message], "trigger": "submit-message", **extra}


@pytest.fixture
def client(token_client):
    return token_client


def ui_events(response: httpx.Response) -> list[dict]:
    """The chunks of a UI message stream (its `data:` lines), after checking it ends with `[DONE]`."""
    lines = [line for line in response.iter_lines() if line and not line.startswith(":")]
    assert all(line.startswith("data: ") for line in lines), lines
    assert lines[-1] == "data: [DONE]", lines[-1]
    return [json.loads(line[6:]) for line in lines[:-1]]


def types(events: list[dict]) -> list[str]:
    return [event["type"] for event in events]


def post_chat(client, body) -> list:
    with client.stream("POST", "/api/ai/chat", json=body) as response:
        assert response.status_code == 200, response.read()
        return ui_events(response)


def test_post_chat_answers_the_ui_message_stream_with_the_database_ids_and_text(client, user):
    with client.stream("POST", "/api/ai/chat", json=chat_body(f"Hello {FAST}")) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-length" not in response.headers
        events = ui_events(response)

    assert types(events) == ["start", "text-start", *["text-delta"] * 4, "text-end", "finish"]
    start, finish = events[0], events[-1]
    conversation = Conversation.objects.get(pk=conversation_id_for(user=user, chat_id="chat-1"))
    question, answer = conversation.messages.order_by("created_at", "position")
    assert start == {
        "type": "start",
        "messageId": str(answer.pk),
        "messageMetadata": {"conversationId": str(conversation.pk), "userMessageId": str(question.pk)},
    }
    assert {e["id"] for e in events[1:-1]} == {str(answer.pk)}
    assert "".join(e["delta"] for e in events if e["type"] == "text-delta") == answer.content
    assert question.content == f"Hello {FAST}"
    assert answer.status == "complete"
    assert finish["finishReason"] == "stop"
    assert finish["messageMetadata"]["usage"] == answer.usage
    assert finish["messageMetadata"]["quota"]["requests_remaining"] == 99


def test_the_same_chat_id_continues_one_conversation_and_two_users_get_two(
    live_asgi, client, user, other_user
):
    from rest_framework.authtoken.models import Token

    post_chat(client, chat_body(FAST, chat_id="shared-id"))
    post_chat(client, chat_body(FAST, chat_id="shared-id"))
    bob = Token.objects.create(user=other_user)
    with httpx.Client(base_url=live_asgi.url, headers={"Authorization": f"Token {bob.key}"}, timeout=30) as c:
        post_chat(c, chat_body(FAST, chat_id="shared-id"))

    mine = Conversation.objects.get(user=user)
    theirs = Conversation.objects.get(user=other_user)
    assert mine.pk == conversation_id_for(user=user, chat_id="shared-id") != theirs.pk
    assert mine.messages.count() == 4
    assert theirs.messages.count() == 2


def test_a_conversation_uuid_is_a_chat_id_and_an_adapter_names_a_new_chats_adapter(client, user):
    post_chat(client, chat_body(FAST, chat_id="fresh", adapter="default"))
    conversation = Conversation.objects.get(user=user)
    post_chat(client, chat_body(FAST, chat_id=str(conversation.pk)))

    assert conversation.adapter == "default"
    assert conversation.messages.count() == 4


def test_regenerate_message_replaces_the_last_answer(client, user):
    post_chat(client, chat_body(f"Once {FAST}"))
    conversation = Conversation.objects.get(user=user)
    first_answer = conversation.messages.get(role="assistant")

    events = post_chat(client, {"id": "chat-1", "messages": [], "trigger": "regenerate-message"})

    question, answer = conversation.messages.order_by("created_at", "position")
    assert not Message.objects.filter(pk=first_answer.pk).exists()
    assert question.content == f"Once {FAST}"
    assert events[0]["messageId"] == str(answer.pk)
    assert events[-1]["type"] == "finish"


def test_regenerate_of_a_chat_without_a_user_message_is_409(client, user):
    body = {"id": "new-chat", "messages": [], "trigger": "regenerate-message"}

    assert_error(client.post("/api/ai/chat", json=body), 409, "nothing_to_regenerate")
    assert not Conversation.objects.exists()


def test_an_adapter_error_ends_the_stream_with_error_then_done(client, user):
    events = post_chat(client, chat_body("[mock:chunks=5][mock:fail_after=2][mock:delay_ms=0]"))

    assert types(events)[-3:] == ["text-delta", "text-end", "error"]
    answer = Message.objects.get(role="assistant")
    assert answer.status == "failed"
    assert events[-1]["errorText"] == answer.error_message


def test_no_credentials_is_401_and_a_bad_token_too(live_asgi):
    response = httpx.post(f"{live_asgi.url}/api/ai/chat", json=chat_body("hi"))
    assert_error(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Token"
    bad = httpx.post(
        f"{live_asgi.url}/api/ai/chat", json=chat_body("hi"), headers={"Authorization": "Token x"}
    )
    assert_error(bad, 401, "authentication_failed")
    for path in ("/api/ai/chat/chat-1", "/api/ai/chat/chat-1/stream"):
        assert_error(httpx.get(f"{live_asgi.url}{path}"), 401, "not_authenticated")
    assert_error(httpx.post(f"{live_asgi.url}/api/ai/chat/chat-1/stop"), 401, "not_authenticated")


@pytest.mark.parametrize("path", ["/api/ai/chat", "/api/ai/chat/chat-1/stop"])
def test_a_session_post_without_csrf_token_is_403(live_asgi, session, path):
    cookies, _ = session
    response = httpx.post(f"{live_asgi.url}{path}", json=chat_body(FAST), cookies=cookies)

    assert_error(response, 403, "permission_denied")
    assert not Message.objects.exists()


def test_a_session_post_with_csrf_token_streams(live_asgi, session):
    cookies, csrf = session
    headers = {"X-CSRFToken": csrf, "Referer": f"{live_asgi.url}/"}
    with httpx.Client(base_url=live_asgi.url, cookies=cookies, headers=headers, timeout=30) as c:
        assert post_chat(c, chat_body(FAST))[-1]["type"] == "finish"


def test_another_users_conversation_is_404_and_stays_untouched(client, other_user):
    theirs = Conversation.objects.create(user=other_user, adapter="default")

    assert_error(client.post("/api/ai/chat", json=chat_body("hi", chat_id=str(theirs.pk))), 404, "not_found")
    assert_error(client.get(f"/api/ai/chat/{theirs.pk}"), 404, "not_found")
    assert_error(client.post(f"/api/ai/chat/{theirs.pk}/stop"), 404, "not_found")
    assert client.get(f"/api/ai/chat/{theirs.pk}/stream").status_code == 204
    assert not theirs.messages.exists()


def test_a_body_that_is_not_json_is_415_or_400(client):
    assert_error(client.post("/api/ai/chat", content=b'{"id": "x"}'), 415, "unsupported_media_type")
    assert_error(client.post("/api/ai/chat", data={"id": "x"}), 415, "unsupported_media_type")
    json_type = {"Content-Type": "application/json"}
    assert_error(client.post("/api/ai/chat", content=b"{nope", headers=json_type), 400, "parse_error")
    assert_error(client.post("/api/ai/chat", content=b"", headers=json_type), 400, "invalid")
    assert_error(client.post("/api/ai/chat", content=b"[]", headers=json_type), 400, "invalid")


def user_says(*parts, role="user"):
    return [{"id": "u1", "role": role, "parts": list(parts)}]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": user_says({"type": "text", "text": "hi"}, role="assistant")}, "messages"),
        ({"messages": user_says({"type": "file", "url": "data:,x", "mediaType": "text/plain"})}, "messages"),
        ({"messages": user_says({"type": "text", "text": "x" * 32001})}, "messages"),
        ({"messages": user_says({"type": "text", "text": "a\u0000b"})}, "messages"),
        ({"messages": user_says({"type": "text", "text": " \n "})}, "messages"),
        ({"trigger": "resume-stream"}, "trigger"),
        ({"trigger": 1}, "trigger"),
        ({"id": "no spaces"}, "id"),
        ({"id": "x" * 101}, "id"),
        ({"adapter": "nope"}, "adapter"),
    ],
    ids=lambda value: str(value)[:30],
)
def test_a_bad_body_is_400_naming_its_field_and_stores_nothing(client, changes, field):
    body = assert_error(client.post("/api/ai/chat", json={**chat_body("hi"), **changes}), 400, "invalid")

    assert field in body["errors"]
    assert not Conversation.objects.exists()


def test_a_chat_whose_answer_runs_is_409_and_quota_refusal_is_429_storing_nothing(client, user):
    with client.stream("POST", "/api/ai/chat", json=chat_body(SLOW)) as response:
        assert response.status_code == 200
        assert_error(client.post("/api/ai/chat", json=chat_body("again")), 409, "stream_in_progress")
        assert Message.objects.count() == 2
        assert client.post("/api/ai/chat/chat-1/stop").json() == {"stopped": True}

    Quota.objects.filter(user=user).update(request_limit=1)  # the stopped answer was charged
    refused = client.post("/api/ai/chat", json=chat_body("one more", chat_id="other"))
    assert_error(refused, 429, "quota_exceeded")
    assert int(refused.headers["retry-after"]) > 0
    assert Message.objects.count() == 2
    assert not Reservation.objects.exists()


def test_reconnect_replays_the_running_answer_from_its_start_and_is_204_once_it_ended(client, user):
    with client.stream(
        "POST", "/api/ai/chat", json=chat_body("[mock:chunks=12][mock:delay_ms=150]")
    ) as first:
        first_events = []
        for line in first.iter_lines():
            if line.startswith("data: {"):
                first_events.append(json.loads(line[6:]))
            if len(first_events) == 3:
                break  # the first reader leaves after one delta; the answer goes on

    with client.stream("GET", "/api/ai/chat/chat-1/stream") as again:
        assert again.status_code == 200
        assert again.headers["x-vercel-ai-ui-message-stream"] == "v1"
        replayed = ui_events(again)

    answer = Message.objects.get(role="assistant")
    assert replayed[:3] == first_events
    assert replayed[-1]["type"] == "finish"
    assert "".join(e["delta"] for e in replayed if e["type"] == "text-delta") == answer.content
    assert answer.status == "complete"
    done = client.get("/api/ai/chat/chat-1/stream")
    assert done.status_code == 204
    assert done.content == b""
    assert client.get("/api/ai/chat/unknown-chat/stream").status_code == 204


def test_stop_ends_the_running_answer_with_abort_and_keeps_it_stopped(client, user):
    with client.stream("POST", "/api/ai/chat", json=chat_body(SLOW)) as response:
        lines = response.iter_lines()
        while not next(lines).startswith('data: {"type":"text-delta"'):
            pass
        assert client.post("/api/ai/chat/chat-1/stop").json() == {"stopped": True}
        rest = [line for line in lines if line.startswith("data: ")]

    assert rest[-2:] == ['data: {"type":"abort","reason":"stopped"}', "data: [DONE]"]
    answer = Message.objects.get(role="assistant")
    assert answer.status == "stopped"
    assert client.post("/api/ai/chat/chat-1/stop").json() == {"stopped": False}
    assert_error(client.post("/api/ai/chat/never-started/stop"), 404, "not_found")


def test_get_chat_lists_its_ui_messages_without_the_answer_being_generated(client, user):
    post_chat(client, chat_body(f"First {FAST}"))
    with client.stream("POST", "/api/ai/chat", json=chat_body(SLOW)) as response:
        assert response.status_code == 200
        listed = client.get("/api/ai/chat/chat-1")
        client.post("/api/ai/chat/chat-1/stop")

    assert listed.status_code == 200
    body = listed.json()
    question, answer = Message.objects.order_by("created_at", "position")[:2]
    assert body["id"] == "chat-1"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0] == {
        "id": str(question.pk),
        "role": "user",
        "parts": [{"type": "text", "text": f"First {FAST}"}],
        "metadata": {
            "status": "complete",
            "createdAt": body["messages"][0]["metadata"]["createdAt"],
            "usage": None,
        },
    }
    assert body["messages"][1]["parts"] == [{"type": "text", "text": answer.content}]
    assert body["messages"][1]["metadata"]["usage"] == answer.usage
    assert body["messages"][0]["metadata"]["createdAt"].startswith(str(question.created_at.year))
    after = client.get("/api/ai/chat/chat-1").json()
    assert [m["metadata"]["status"] for m in after["messages"]] == [
        "complete",
        "complete",
        "complete",
        "stopped",
    ]
    assert_error(client.get("/api/ai/chat/unknown"), 404, "not_found")
    assert_error(client.get(f"/api/ai/chat/{uuid.uuid4()}"), 404, "not_found")


def test_a_path_that_is_not_a_chat_id_is_a_json_404(client):
    assert_error(client.get("/api/ai/chat/has.dot"), 404, "not_found")
    assert_error(client.get("/api/ai/chat/x/stream/extra"), 404, "not_found")


def test_the_first_readers_hang_up_interrupts_the_answer_under_on_disconnect_interrupt(
    asgi_server_factory, token, user
):
    server = asgi_server_factory(AI_STREAM_ON_DISCONNECT="interrupt")
    headers = {"Authorization": f"Token {token.key}"}
    with (
        httpx.Client(base_url=server.url, headers=headers, timeout=30) as c,
        c.stream("POST", "/api/ai/chat", json=chat_body(SLOW)) as response,
    ):
        for line in response.iter_lines():
            if line.startswith('data: {"type":"text-delta"'):
                break

    answer = wait_for(lambda: Message.objects.filter(role="assistant").exclude(status="streaming").first())
    assert answer.status == "interrupted"
