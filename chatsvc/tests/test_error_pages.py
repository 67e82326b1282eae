"""Django's own error pages: JSON under /api/ (errors raised outside DRF), HTML elsewhere."""

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.test import RequestFactory

from chatsvc import views

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("handler", "args", "status", "code"),
    [
        (views.bad_request, (Exception(),), 400, "bad_request"),
        (views.permission_denied, (PermissionDenied(),), 403, "permission_denied"),
        (views.page_not_found, (Http404(),), 404, "not_found"),
        (views.server_error, (), 500, "internal_error"),
    ],
    ids=["400", "403", "404", "500"],
)
def test_error_pages_under_api_are_json_and_html_elsewhere(handler, args, status, code):
    api_response = handler(RequestFactory().get("/api/anything/"), *args)
    page_response = handler(RequestFactory().get("/elsewhere/"), *args)

    assert api_response.status_code == page_response.status_code == status
    assert api_response["Content-Type"] == "application/json"
    assert api_response.content.decode().startswith('{"detail": ')
    assert f'"code": "{code}"' in api_response.content.decode()
    assert page_response["Content-Type"].startswith("text/html")


def test_a_body_larger_than_django_accepts_is_a_json_error_not_html(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = api.post("/api/conversations/", {"title": "x" * 5000}, format="json")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "bad_request"


def test_an_unknown_page_outside_api_stays_an_html_404(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
