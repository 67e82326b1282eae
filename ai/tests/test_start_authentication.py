"""A start's token, remembered by the server from an earlier start (chatsvc.authentication): a token
deleted or a user deactivated since starts nothing, on either start endpoint, whatever else the request
would have got — a real daphne, httpx, PostgreSQL."""

import uuid

import httpx
import pytest

from ai.tests.test_ai_sdk_http import chat_body
from ai.tests.test_stream_errors import assert_error
from conversations.models import Message
from quota.models import Reservation

pytestmark = pytest.mark.django_db(transaction=True)

FAST = "Hello [mock:chunks=3][mock:delay_ms=0]"
STARTS = {  # each start endpoint, and its body for a new conversation (the n-th)
    "stream": ("/api/ai/chat/stream", lambda n: {"message": FAST}),
    "ai-sdk": ("/api/ai/chat", lambda n: chat_body(FAST, chat_id=f"chat-{n}")),
}


def answered(client, path: str, body: dict, **kwargs) -> httpx.Response:
    """POST a start and read its stream to the end (its answer and reservation settled by then)."""
    with client.stream("POST", path, json=body, **kwargs) as response:
        response.read()
    return response


def revoke(how: str, token) -> str:
    """Take the token's right away, as an operator does; the detail of the 401 that follows."""
    if how == "token deleted":
        token.delete()
        return "Invalid token."
    token.user.is_active = False
    token.user.save(update_fields=["is_active"])
    return "User inactive or deleted."


def written() -> tuple[int, int]:
    return Message.objects.count(), Reservation.objects.count()


@pytest.mark.parametrize("how", ["token deleted", "user deactivated"])
@pytest.mark.parametrize("endpoint", STARTS)
def test_a_token_revoked_after_a_start_starts_nothing_more(token_client, token, endpoint, how):
    path, body = STARTS[endpoint]
    assert answered(token_client, path, body(1)).status_code == 200  # the server now remembers the token
    before = written()

    detail = revoke(how, token)
    response = token_client.post(path, json=body(2))

    assert assert_error(response, 401, "authentication_failed")["detail"] == detail
    assert written() == before


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"message": ""}, id="an invalid body"),
        pytest.param(
            {"message": FAST, "conversation_id": str(uuid.uuid4())},
            id="no such conversation",
        ),
    ],
)
def test_a_revoked_token_gets_its_401_before_any_other_error(token_client, token, body):
    assert answered(token_client, "/api/ai/chat/stream", {"message": FAST}).status_code == 200

    revoke("token deleted", token)

    assert_error(token_client.post("/api/ai/chat/stream", json=body), 401, "authentication_failed")


def test_a_revoked_token_cannot_replay_an_answer_by_its_idempotency_key(token_client, token):
    key = {"Idempotency-Key": "retry-me"}
    first = answered(token_client, "/api/ai/chat/stream", {"message": FAST}, headers=key)
    assert first.status_code == 200
    assert "data:" in first.text

    revoke("token deleted", token)
    response = token_client.post("/api/ai/chat/stream", json={"message": FAST}, headers=key)

    assert_error(response, 401, "authentication_failed")
    assert "data:" not in response.text


def test_a_revoked_token_cannot_regenerate_an_answer(token_client, token):
    first = answered(token_client, "/api/ai/chat/stream", {"message": FAST})
    assert first.status_code == 200
    answer = Message.objects.get(role=Message.Role.ASSISTANT)
    before = written()

    revoke("user deactivated", token)
    response = token_client.post(
        "/api/ai/chat/stream", json={"conversation_id": str(answer.conversation_id), "regenerate": True}
    )

    assert_error(response, 401, "authentication_failed")
    assert written() == before
    kept = Message.objects.get(role=Message.Role.ASSISTANT)
    assert (kept.pk, kept.content, kept.status) == (answer.pk, answer.content, answer.status)


def test_a_token_still_valid_starts_as_before_on_the_servers_memory(token_client):
    for _ in range(3):
        assert answered(token_client, "/api/ai/chat/stream", {"message": FAST}).status_code == 200

    assert Message.objects.filter(role=Message.Role.ASSISTANT, status=Message.Status.COMPLETE).count() == 3
    assert Reservation.objects.count() == 0
