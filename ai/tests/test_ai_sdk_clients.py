"""The real AI SDK client (the `ai` npm package, ai/tests/js) in Node against a live daphne.

`DefaultChatTransport` and `WebSocketChatTransport` (given the `ws` package's WebSocket class), read
with `readUIMessageStream` as `useChat` reads them: the text they assemble is the text the database
holds; a reconnect resumes a running answer and finds nothing once it is done; an abort stops it;
refusals surface as the transport's errors.
"""

import json

import pytest
from rest_framework.authtoken.models import Token

from ai.sdk_serializers import conversation_id_for
from ai.tests.ai_sdk import node, node_run, text_of
from ai.tests.sse_client import wait_for
from ai.tests.test_sdk_requests import FRAMES
from conversations.models import Conversation, Message
from quota.models import Quota

pytestmark = pytest.mark.django_db(transaction=True)

FAST = "[mock:chunks=5][mock:delay_ms=0]"
SLOW = "[mock:chunks=30][mock:delay_ms=100]"


@pytest.fixture(params=["http", "ws"])
def kind(request):
    return request.param


def transport(kind: str, server, token=None, **options) -> dict:
    """A transport of `kind` for run.mjs; with a token, sent as the `Authorization` header (HTTP) or
    in each frame's `headers` (WebSocket: the transport is given the `ws` package's own class)."""
    headers = {"Authorization": f"Token {token.key}"} if token else {}
    return {"kind": kind, "baseUrl": server.url, "headers": headers, **options}


def answers() -> list[Message]:
    return list(Message.objects.filter(role="assistant").order_by("created_at"))


def test_send_messages_assembles_the_text_the_database_holds(live_asgi, token, user, kind):
    [read] = node_run(
        [{"action": "send", "chatId": "sdk-chat", "text": f"Hello {FAST}"}],
        [transport(kind, live_asgi, token)],
    )

    [answer] = answers()
    conversation = Conversation.objects.get(pk=conversation_id_for(user=user, chat_id="sdk-chat"))
    question = conversation.messages.get(role="user")
    assert read["errors"] == []
    assert read["message"]["id"] == str(answer.pk)
    assert read["message"]["role"] == "assistant"
    assert text_of(read["message"]) == answer.content != ""
    assert read["message"]["parts"][-1]["state"] == "done"
    assert read["message"]["metadata"] == {
        "conversationId": str(conversation.pk),
        "userMessageId": str(question.pk),
        "usage": answer.usage,
        "quota": read["message"]["metadata"]["quota"],
    }
    assert read["message"]["metadata"]["quota"]["requests_remaining"] == 99
    assert [c["type"] for c in read["chunks"]][-2:] == ["text-end", "finish"]
    assert answer.status == "complete"


def test_regenerate_message_replaces_the_answer(live_asgi, token, user, kind):
    reads = node_run(
        [
            {"action": "send", "chatId": "again", "text": f"Once {FAST}"},
            {"action": "send", "chatId": "again", "text": f"Once {FAST}", "trigger": "regenerate-message"},
        ],
        [transport(kind, live_asgi, token)],
    )

    [answer] = answers()
    assert reads[1]["message"]["id"] == str(answer.pk) != reads[0]["message"]["id"]
    assert text_of(reads[1]["message"]) == answer.content
    assert Message.objects.filter(role="user").count() == 1


def test_reconnect_after_the_first_reader_left_resumes_the_running_answer_then_finds_none(
    live_asgi, token, user, kind
):
    # The first page leaves after two deltas (HTTP: its request is aborted; WebSocket: its socket
    # closes, a reload); a second page reconnects, then reconnects again once the answer is done.
    leave = "abort" if kind == "http" else "close"
    reads = node_run(
        [
            {"action": "send", "chatId": "reload", "text": SLOW, "leaveAfterDeltas": 2, "leaveBy": leave},
            {"action": "reconnect", "chatId": "reload", "transport": 1},
            {"action": "reconnect", "chatId": "reload", "transport": 1},
        ],
        [transport(kind, live_asgi, token), transport(kind, live_asgi, token)],
    )

    first, resumed, after = reads
    [answer] = answers()
    assert len([c for c in first["chunks"] if c["type"] == "text-delta"]) == 2
    assert resumed["errors"] == []
    assert resumed["message"]["id"] == str(answer.pk)
    assert text_of(resumed["message"]) == answer.content
    assert answer.status == "complete"
    assert resumed["chunks"][0]["type"] == "start"  # replayed from the start
    assert after == {"result": None}


def test_a_reconnect_with_nothing_running_is_null(live_asgi, token, kind):
    [read] = node_run([{"action": "reconnect", "chatId": "never"}], [transport(kind, live_asgi, token)])

    assert read == {"result": None}


def test_websocket_abort_stops_the_answer(live_asgi, token, user):
    [read] = node_run(
        [{"action": "send", "chatId": "stop-me", "text": SLOW, "leaveAfterDeltas": 2, "leaveBy": "abort"}],
        [transport("ws", live_asgi, token)],
    )

    answer = wait_for(lambda: Message.objects.filter(role="assistant").exclude(status="streaming").first())
    assert answer.status == "stopped"
    assert answer.content.startswith(text_of(read["message"]))


def test_http_abort_leaves_the_answer_running_for_a_reconnect(live_asgi, token, user):
    reads = node_run(
        [
            {"action": "send", "chatId": "left", "text": SLOW, "leaveAfterDeltas": 1, "leaveBy": "abort"},
            {"action": "reconnect", "chatId": "left"},
        ],
        [transport("http", live_asgi, token)],
    )

    [answer] = answers()
    assert answer.status == "complete"
    assert text_of(reads[1]["message"]) == answer.content


def test_several_requests_share_one_socket(live_asgi, token, user):
    reads = node_run(
        [
            {"action": "send", "chatId": "one", "text": f"First {FAST}", "parallel": 1},
            {"action": "send", "chatId": "two", "text": f"Second {SLOW}", "parallel": 1},
            {"action": "send", "chatId": "three", "text": f"Third {FAST}", "parallel": 1},
        ],
        [transport("ws", live_asgi, token)],
    )

    by_id = {str(a.pk): a for a in answers()}
    assert len(by_id) == 3
    for read in reads:
        assert read["errors"] == []
        assert text_of(read["message"]) == by_id[read["message"]["id"]].content


def test_quota_refusal_and_another_users_chat_surface_as_the_transports_errors(
    live_asgi, token, user, other_user, kind
):
    theirs = Conversation.objects.create(user=other_user, adapter="default")
    Quota.objects.create(user=user, request_limit=0)
    refused, missing = node_run(
        [
            {"action": "send", "chatId": "no-quota", "text": "hi"},
            {"action": "send", "chatId": str(theirs.pk), "text": "hi"},
        ],
        [transport(kind, live_asgi, token)],
    )

    if kind == "http":  # sendMessages rejects with the SDK's APICallError
        assert refused["error"]["name"] == "AI_APICallError"
        assert refused["error"]["statusCode"] == 429
        assert json.loads(refused["error"]["responseBody"])["code"] == "quota_exceeded"
        assert missing["error"]["statusCode"] == 404
        assert json.loads(missing["error"]["responseBody"])["code"] == "not_found"
    else:  # the request's stream errors with the server's errorText
        [quota_error] = refused["errors"]
        assert "quota" in quota_error["message"].lower()
        assert missing["errors"] == [{"name": "Error", "message": "Not found."}]
        assert refused["message"] is missing["message"] is None
    assert not Message.objects.exists()


def test_no_credentials_surface_as_an_error(live_asgi, kind):
    [read] = node_run([{"action": "send", "chatId": "anon", "text": "hi"}], [transport(kind, live_asgi)])

    if kind == "http":
        assert read["error"]["statusCode"] == 401
    else:
        assert read["errors"] == [
            {"name": "Error", "message": "Authentication credentials were not provided."}
        ]
    assert not Message.objects.exists()


def test_a_websocket_page_signed_in_with_its_session_cookie_needs_no_token(live_asgi, session):
    cookie = "; ".join(f"{name}={value}" for name, value in session[0].items())

    [read] = node_run(
        [{"action": "send", "chatId": "by-cookie", "text": FAST}],
        [transport("ws", live_asgi, cookie=cookie, origin=live_asgi.url)],  # a page of the service
    )

    [answer] = answers()
    assert text_of(read["message"]) == answer.content


def test_a_socket_from_another_origin_is_refused(live_asgi, token):
    [read] = node_run(
        [{"action": "send", "chatId": "evil", "text": "hi"}],
        [transport("ws", live_asgi, token, origin="http://evil.example")],
    )

    assert "WebSocket chat network connection" in read["error"]["message"]
    assert not Message.objects.exists()


def test_the_frame_table_matches_the_ai_sdks_own_validation():
    results = node("validate", {"frames": [value for value, _ in FRAMES]})

    assert [result["success"] for result in results] == [valid for _, valid in FRAMES]


def test_the_ai_sdk_under_test_is_the_pinned_one():
    from ai.tests.ai_sdk import JS_DIR, ai_sdk_version

    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    assert ai_sdk_version() == lock["packages"]["node_modules/ai"]["version"]
    assert json.loads((JS_DIR / "package.json").read_text())["dependencies"]["ai"] == ai_sdk_version()


def test_two_users_of_one_chat_id_over_the_sdk_get_two_conversations(live_asgi, token, user, other_user):
    bob = Token.objects.create(user=other_user)
    node_run(
        [
            {"action": "send", "chatId": "same", "text": FAST},
            {"action": "send", "chatId": "same", "text": FAST, "transport": 1},
        ],
        [transport("http", live_asgi, token), transport("ws", live_asgi, bob)],
    )

    assert (
        Conversation.objects.filter(user=user).get().pk
        != Conversation.objects.filter(user=other_user).get().pk
    )


def test_a_reloaded_page_resumes_the_answer_as_use_chat_does(live_asgi, token, user, kind):
    result = node("reload", {"transport": transport(kind, live_asgi, token), "chatId": "page", "text": SLOW})

    question, answer = Message.objects.order_by("created_at", "position")
    assert answer.status == "complete"
    assert result["errors"] == []
    assert result["status"] == "ready"
    assert text_of(result["before"]) != ""  # the first page had begun to show it
    assert [m["id"] for m in result["initial"]] == [str(question.pk)]  # still generated: not listed
    assert [(m["id"], m["role"]) for m in result["messages"]] == [
        (str(question.pk), "user"),
        (str(answer.pk), "assistant"),
    ]
    assert text_of(result["messages"][1]) == answer.content
    assert result["messages"][1]["metadata"]["usage"] == answer.usage


def test_a_page_reconnecting_to_another_process_resumes_the_answer(asgi_server_factory, token, user, kind):
    # Two server processes on one database and one Redis (the channels layer), as behind a load balancer.
    settings = {"REDIS_URL": "redis://127.0.0.1:6379/0", "AI_STREAM_OWNER_TIMEOUT": "2"}
    a, b = asgi_server_factory(**settings, SERVER_NAME="A"), asgi_server_factory(**settings, SERVER_NAME="B")
    leave = "abort" if kind == "http" else "close"
    _, resumed = node_run(
        [
            {"action": "send", "chatId": "far", "text": SLOW, "leaveAfterDeltas": 2, "leaveBy": leave},
            {"action": "reconnect", "chatId": "far", "transport": 1},
        ],
        [transport(kind, a, token), transport(kind, b, token)],
    )

    [answer] = answers()
    assert answer.status == "complete"
    assert resumed["errors"] == []
    assert resumed["message"]["id"] == str(answer.pk)
    assert text_of(resumed["message"]) == answer.content
