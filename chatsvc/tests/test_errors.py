"""Every error under /api/ is JSON `{"detail", "code"}` with the right status: never HTML, never 500."""

import pytest
from rest_framework.test import APIClient

from conversations.models import Conversation
from conversations.tests.factories import ConversationFactory

pytestmark = pytest.mark.django_db

LIST_URL = "/api/conversations/"


def assert_json_error(response, status: int, code: str):
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


@pytest.fixture
def conversation(user):
    return ConversationFactory(user=user, title="Mine")


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"title": }', b"{'title': 'x'}", b'{"title": NaN}', b"\xff\xfe{}", b'{"title": "\xe9"}'],
    ids=["truncated", "missing-value", "single-quotes", "nan", "not-utf8-bom", "latin1-byte"],
)
def test_a_body_that_is_not_json_or_not_utf8_is_a_parse_error(api, raw):
    response = api.generic("POST", LIST_URL, raw, content_type="application/json")

    assert_json_error(response, 400, "parse_error")
    assert not Conversation.objects.exists()


@pytest.mark.parametrize("raw", [b"[]", b'["title"]', b'"title"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_invalid(api, raw):
    response = api.generic("POST", LIST_URL, raw, content_type="application/json")

    body = assert_json_error(response, 400, "invalid")
    assert "errors" in body
    assert not Conversation.objects.exists()


def test_json_that_is_not_an_object_is_invalid_for_patch_too(api, conversation):
    response = api.generic(
        "PATCH", f"/api/conversations/{conversation.pk}/", b'["x"]', content_type="application/json"
    )

    assert_json_error(response, 400, "invalid")


def test_an_empty_json_body_is_invalid(api):
    response = api.generic("POST", LIST_URL, b"", content_type="application/json")

    assert_json_error(response, 400, "invalid")
    assert not Conversation.objects.exists()


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"title=x", "application/x-www-form-urlencoded"),
        (b'{"title": "x"}', "text/plain"),
        (b'{"title": "x"}', "multipart/form-data; boundary=xyz"),
        (b'{"title": "x"}', ""),
    ],
    ids=["form", "text", "multipart", "empty-type"],
)
def test_a_body_that_is_not_declared_json_is_unsupported(api, raw, content_type):
    response = api.generic("POST", LIST_URL, raw, content_type=content_type)

    assert_json_error(response, 415, "unsupported_media_type")
    assert not Conversation.objects.exists()


def test_a_post_without_body_or_content_type_is_unsupported(api):
    # A body without the header reads as the "empty-type" case above: Django gives `content_type == ""`.
    response = api.post(LIST_URL)

    assert "CONTENT_TYPE" not in response.wsgi_request.META
    assert_json_error(response, 415, "unsupported_media_type")
    assert not Conversation.objects.exists()


def test_a_patch_without_content_type_is_unsupported_and_changes_nothing(api, conversation):
    response = api.patch(f"/api/conversations/{conversation.pk}/")

    assert_json_error(response, 415, "unsupported_media_type")
    conversation.refresh_from_db()
    assert conversation.title == "Mine"


def test_json_with_a_charset_is_accepted(api):
    response = api.generic(
        "POST", LIST_URL, b'{"title": "x"}', content_type="application/json; charset=utf-8"
    )

    assert response.status_code == 201


def test_a_nul_character_in_the_title_is_invalid(api, conversation):
    created = api.post(LIST_URL, {"title": "a\x00b"}, format="json")
    patched = api.patch(f"/api/conversations/{conversation.pk}/", {"title": "a\x00b"}, format="json")

    assert "title" in assert_json_error(created, 400, "invalid")["errors"]
    assert "title" in assert_json_error(patched, 400, "invalid")["errors"]
    assert list(Conversation.objects.values_list("title", flat=True)) == ["Mine"]


def test_an_unpaired_surrogate_in_the_title_is_invalid_not_a_500(api):
    response = api.generic("POST", LIST_URL, b'{"title": "a\\ud800b"}', content_type="application/json")

    assert_json_error(response, 400, "invalid")


@pytest.mark.parametrize("method", ["get", "post", "patch", "delete"])
@pytest.mark.parametrize(
    "path", ["/api/nope", "/api/nope/", "/api/conversations", "/api/conversations/x/y/z"]
)
@pytest.mark.parametrize("authenticated", [True, False], ids=["token", "anonymous"])
def test_an_unknown_path_under_api_is_a_json_404(api, method, path, authenticated):
    client = api if authenticated else APIClient()

    response = getattr(client, method)(path, {"a": 1}, format="json")

    assert_json_error(response, 404, "not_found")


@pytest.mark.parametrize(
    "path",
    [
        "/api/conversations/not-a-uuid/",
        "/api/conversations/12345/",
        "/api/conversations/00000000-0000-0000-0000-00000000000g/",
        "/api/conversations/not-a-uuid/messages/",
        "/api/conversations/%00/",
    ],
)
@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_a_malformed_uuid_in_the_path_is_a_json_404(api, path, method):
    response = getattr(api, method)(path, {"title": "x"}, format="json")

    assert_json_error(response, 404, "not_found")


def test_a_missing_conversation_is_a_json_404(api):
    response = api.get("/api/conversations/00000000-0000-4000-8000-000000000000/messages/")

    assert_json_error(response, 404, "not_found")


def test_a_wrong_method_is_a_json_405(api):
    response = api.delete(LIST_URL)

    assert_json_error(response, 405, "method_not_allowed")


def test_a_validation_error_lists_the_field_messages(api):
    response = api.post(LIST_URL, {"title": "x" * 201}, format="json")

    body = assert_json_error(response, 400, "invalid")
    assert body["detail"] == "Invalid input."
    assert body["errors"] == {"title": ["Ensure this field has no more than 200 characters."]}


def test_a_page_that_is_not_a_number_is_a_json_404(api):
    assert_json_error(api.get(LIST_URL, {"page": "abc"}), 404, "not_found")
