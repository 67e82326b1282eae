"""The stream's checks answer JSON errors before any byte of a stream, in API.md's order."""

import httpx
import pytest
from django.conf import settings
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client as DjangoClient

from conversations.models import Conversation, Message
from quota.models import Quota

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def post(live_asgi):
    """POST to the stream endpoint on the live server; returns the (fully read) response."""

    def send(token=None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Token {token}"
        return httpx.post(f"{live_asgi.url}/api/ai/chat/stream", headers=headers, timeout=30, **kwargs)

    return send


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == code
    assert body["detail"]
    return body


def test_no_credentials_is_401_with_www_authenticate(post):
    response = post(json={"message": "hi"})
    assert_error(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Token"


def test_bad_token_is_401_even_with_a_bad_body(post):
    assert_error(post("not-a-token", content=b"{not json"), 401, "authentication_failed")


def test_wrong_method_is_405(live_asgi, token):
    response = httpx.get(
        f"{live_asgi.url}/api/ai/chat/stream", headers={"Authorization": f"Token {token.key}"}
    )
    assert_error(response, 405, "method_not_allowed")


def test_form_body_is_415(post, token):
    assert_error(post(token.key, data={"message": "hi"}), 415, "unsupported_media_type")


def test_body_without_content_type_is_415(post, token):
    assert_error(post(token.key, content=b'{"message": "hi"}'), 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", "parse_error"),
        (b'{"message": "\xff\xfe"}', "parse_error"),
        (b"", "invalid"),
        (b"[]", "invalid"),
        (b'"hello"', "invalid"),
    ],
)
def test_malformed_body_is_400(post, token, content, code):
    assert_error(post(token.key, content=content, headers={"Content-Type": "application/json"}), 400, code)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": "   \n "}, "message"),
        ({"message": 42}, "message"),
        ({"message": ["hi"]}, "message"),
        ({"message": "a\u0000b"}, "message"),
        ({"message": "x" * 32001}, "message"),
        ({"message": "hi", "conversation_id": "not-a-uuid"}, "conversation_id"),
        ({"message": "hi", "conversation_id": 12}, "conversation_id"),
        ({"message": "hi", "adapter": "nope"}, "adapter"),
        ({"message": "hi", "adapter": 3}, "adapter"),
    ],
)
def test_invalid_fields_are_400_naming_the_field_and_store_nothing(post, token, body, field):
    error = assert_error(post(token.key, json=body), 400, "invalid")
    assert field in error["errors"]
    assert Message.objects.count() == 0
    assert Conversation.objects.count() == 0


def test_adapter_with_an_existing_conversation_is_400_naming_adapter(post, token, user):
    conversation = Conversation.objects.create(user=user, adapter="default")
    error = assert_error(
        post(
            token.key, json={"message": "hi", "conversation_id": str(conversation.pk), "adapter": "default"}
        ),
        400,
        "invalid",
    )
    assert "adapter" in error["errors"]


def test_another_users_conversation_is_404_before_quota(post, token, user, other_user):
    theirs = Conversation.objects.create(user=other_user, adapter="default")
    Quota.objects.create(user=user, request_limit=0)
    assert_error(post(token.key, json={"message": "hi", "conversation_id": str(theirs.pk)}), 404, "not_found")
    assert not theirs.messages.exists()


def test_missing_conversation_is_404(post, token):
    missing = "00000000-0000-4000-8000-000000000000"
    assert_error(post(token.key, json={"message": "hi", "conversation_id": missing}), 404, "not_found")


def test_retired_adapter_alias_is_503_before_quota(post, token, user):
    conversation = Conversation.objects.create(user=user, adapter="retired")
    Quota.objects.create(user=user, request_limit=0)
    assert_error(
        post(token.key, json={"message": "hi", "conversation_id": str(conversation.pk)}),
        503,
        "adapter_unavailable",
    )
    assert not conversation.messages.exists()


def test_exhausted_quota_is_429_with_retry_after_and_stores_nothing(post, token, user):
    Quota.objects.create(user=user, request_limit=0)
    response = post(token.key, json={"message": "hi"})
    assert_error(response, 429, "quota_exceeded")
    assert 0 < int(response.headers["retry-after"]) <= 86400
    assert Message.objects.count() == 0
    assert Conversation.objects.count() == 0


def test_exhausted_quota_leaves_an_existing_conversation_as_it_was(post, token, user):
    """Its exchange's writes (messages, `updated_at`, an empty title filled) are made with the
    reservation or not at all: the statement that reserves also commits (chatsvc.rows.insert)."""
    conversation = Conversation.objects.create(user=user, adapter="default", title="")
    before = Conversation.objects.get(pk=conversation.pk).updated_at
    Quota.objects.create(user=user, request_limit=0)
    response = post(
        token.key, json={"message": "A title it must not get", "conversation_id": str(conversation.pk)}
    )
    assert_error(response, 429, "quota_exceeded")
    stored = Conversation.objects.get(pk=conversation.pk)
    assert (stored.title, stored.updated_at) == ("", before)
    assert not stored.messages.exists()


@pytest.fixture
def session_cookies(user):
    """A logged-in session of `user` (stored in the test database) and a CSRF cookie."""
    django_client = DjangoClient()
    django_client.force_login(user)
    csrf = _get_new_csrf_string()
    cookies = {settings.SESSION_COOKIE_NAME: django_client.cookies[settings.SESSION_COOKIE_NAME].value}
    return cookies, csrf


def test_session_request_without_csrf_token_is_403(live_asgi, session_cookies):
    cookies, _ = session_cookies
    response = httpx.post(f"{live_asgi.url}/api/ai/chat/stream", json={"message": "hi"}, cookies=cookies)
    assert_error(response, 403, "permission_denied")
    assert Message.objects.count() == 0


def test_session_request_with_csrf_token_streams(live_asgi, session_cookies):
    cookies, csrf = session_cookies
    response = httpx.post(
        f"{live_asgi.url}/api/ai/chat/stream",
        json={"message": "[mock:chunks=2][mock:delay_ms=0]"},
        cookies={**cookies, settings.CSRF_COOKIE_NAME: csrf},
        headers={"X-CSRFToken": csrf, "Referer": live_asgi.url + "/"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert '"type":"done"' in response.text
