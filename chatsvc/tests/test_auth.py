"""Who may call the API: token or session (with CSRF for unsafe methods), 401 otherwise."""

import pytest
from django.middleware.csrf import get_token
from django.test import RequestFactory
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIClient

from chatsvc import authentication, rows
from chatsvc.authentication import Remembered, RememberingTokenAuthentication, TokenAuthentication
from conversations.models import Conversation
from conversations.tests.factories import ConversationFactory

pytestmark = pytest.mark.django_db

LIST_URL = "/api/conversations/"


@pytest.fixture
def conversation(user):
    return ConversationFactory(user=user, title="Mine")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", LIST_URL),
        ("post", LIST_URL),
        ("get", "{detail}"),
        ("patch", "{detail}"),
        ("delete", "{detail}"),
    ],
)
def test_no_credentials_is_a_401_asking_for_a_token(conversation, method, path):
    url = path.format(detail=f"/api/conversations/{conversation.pk}/")

    response = getattr(APIClient(), method)(url, {"title": "x"}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {
        "detail": "Authentication credentials were not provided.",
        "code": "not_authenticated",
    }
    assert Conversation.objects.get().title == "Mine"


@pytest.mark.parametrize("header", ["Token not-a-real-key", "Token ", "Bearer abc", "Token a b"])
def test_a_bad_token_is_a_401(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get(LIST_URL)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["code"] in {"authentication_failed", "not_authenticated"}


def test_an_unknown_token_key_is_authentication_failed():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")

    response = client.get(LIST_URL)

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token.", "code": "authentication_failed"}


def test_the_token_of_a_deactivated_user_is_refused(api, user, conversation):
    user.is_active = False
    user.save()

    response = api.get(LIST_URL)

    assert response.status_code == 401
    assert response.json() == {"detail": "User inactive or deleted.", "code": "authentication_failed"}


def test_a_token_authenticates_its_user_with_every_field_read(user, token):
    found, key = TokenAuthentication().authenticate_credentials(token.key)

    assert (found.pk, found.username, found.date_joined, found.is_active) == (
        user.pk,
        user.username,
        user.date_joined,
        True,
    )
    assert key == token.key


def token_request(key: str):
    return RequestFactory().post("/api/ai/chat/stream", HTTP_AUTHORIZATION=f"Token {key}")


def test_a_starts_token_is_read_once_then_remembered_with_the_condition_that_checks_it(
    user, token, django_assert_num_queries
):
    with django_assert_num_queries(1):
        first, key = RememberingTokenAuthentication().authenticate(token_request(token.key))
    with django_assert_num_queries(0):
        again, remembered = RememberingTokenAuthentication().authenticate(token_request(token.key))

    assert (first.pk, key) == (user.pk, token.key)
    assert (again.pk, again.username) == (user.pk, user.username)
    assert again is not first
    assert remembered == Remembered(token.key, user.pk)
    assert rows.holds(remembered.still_valid())
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert not rows.holds(remembered.still_valid())
    with pytest.raises(AuthenticationFailed, match="inactive"):
        remembered.confirm()
    # Forgotten by the failed confirmation: read again.
    with django_assert_num_queries(1), pytest.raises(AuthenticationFailed):
        RememberingTokenAuthentication().authenticate(token_request(token.key))


def test_a_remembered_token_is_read_again_after_a_while_and_the_oldest_is_forgotten_first(
    user, other_user, token, monkeypatch, django_assert_num_queries
):
    other = Token.objects.create(user=other_user)
    remembering = RememberingTokenAuthentication()
    monkeypatch.setattr(authentication, "REMEMBER_AT_MOST", 1)
    remembering.authenticate(token_request(token.key))
    remembering.authenticate(token_request(other.key))  # the first forgotten to make room
    with django_assert_num_queries(1):
        assert remembering.authenticate(token_request(token.key))[1] == token.key

    monkeypatch.setattr(authentication, "REMEMBER_FOR", 0.0)
    with django_assert_num_queries(1):
        assert remembering.authenticate(token_request(token.key))[1] == token.key


def test_a_valid_token_reads_the_callers_conversations(api, conversation):
    response = api.get(LIST_URL)

    assert response.status_code == 200
    assert [item["id"] for item in response.json()["results"]] == [str(conversation.pk)]


def test_a_session_login_reads_the_api(client, user, conversation):
    assert client.login(username="alice", password="alice-password")

    response = client.get(LIST_URL)

    assert response.status_code == 200
    assert response.json()["results"][0]["id"] == str(conversation.pk)


@pytest.fixture
def session_client(user):
    """A logged-in session client that enforces CSRF, as a browser's requests are checked."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_token_for(client):
    """A valid CSRF token for the client's session: set the cookie, return the matching header value."""
    request = RequestFactory().get("/")
    token = get_token(request)
    client.cookies["csrftoken"] = request.META["CSRF_COOKIE"]
    return token


def test_a_session_get_needs_no_csrf_token(session_client, conversation):
    assert session_client.get(f"/api/conversations/{conversation.pk}/").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", LIST_URL, {"title": "New"}),
        ("patch", "{detail}", {"title": "Changed"}),
        ("delete", "{detail}", None),
    ],
)
def test_a_session_write_without_csrf_token_is_a_403_and_changes_nothing(
    session_client, conversation, method, path, body
):
    url = path.format(detail=f"/api/conversations/{conversation.pk}/")

    response = getattr(session_client, method)(url, body, format="json")

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert "CSRF" in response.json()["detail"]
    assert list(Conversation.objects.values_list("title", flat=True)) == ["Mine"]


def test_a_session_write_with_a_wrong_csrf_token_is_a_403(session_client, conversation):
    csrf_token_for(session_client)

    response = session_client.patch(
        f"/api/conversations/{conversation.pk}/", {"title": "x"}, format="json", HTTP_X_CSRFTOKEN="w" * 32
    )

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_a_session_post_with_csrf_token_creates(session_client, user):
    token = csrf_token_for(session_client)

    response = session_client.post(LIST_URL, {"title": "New"}, format="json", HTTP_X_CSRFTOKEN=token)

    assert response.status_code == 201
    assert Conversation.objects.get(pk=response.json()["id"]).user == user


def test_a_session_patch_with_csrf_token_updates(session_client, conversation):
    token = csrf_token_for(session_client)

    response = session_client.patch(
        f"/api/conversations/{conversation.pk}/", {"title": "Changed"}, format="json", HTTP_X_CSRFTOKEN=token
    )

    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.title == "Changed"


def test_a_session_delete_with_csrf_token_deletes(session_client, conversation):
    token = csrf_token_for(session_client)

    response = session_client.delete(f"/api/conversations/{conversation.pk}/", HTTP_X_CSRFTOKEN=token)

    assert response.status_code == 204
    assert not Conversation.objects.exists()


def test_a_token_request_needs_no_csrf_token(token, conversation):
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    response = client.patch(f"/api/conversations/{conversation.pk}/", {"title": "Changed"}, format="json")

    assert response.status_code == 200
