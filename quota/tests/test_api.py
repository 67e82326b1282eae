"""`GET /api/quota/`: the caller's quota in API.md's shape."""

import pytest
from rest_framework.test import APIClient

from quota.tests.factories import QuotaFactory, ReservationFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("a_day_in_june")]


def test_quota_answers_api_md_shape(api, user):
    ReservationFactory(quota=QuotaFactory(user=user, requests_used=3, tokens_used=1234))

    response = api.get("/api/quota/")

    assert response.status_code == 200
    assert response.json() == {
        "period": "day",
        "period_start": "2026-06-15T00:00:00Z",
        "resets_at": "2026-06-16T00:00:00Z",
        "requests": {"limit": 100, "used": 3, "reserved": 1, "remaining": 96},
        "tokens": {"limit": None, "used": 1234, "remaining": None},
    }


def test_quota_of_a_new_user_shows_the_defaults(api, settings):
    settings.QUOTA_PERIOD = "never"
    settings.QUOTA_DEFAULT_TOKEN_LIMIT = 5000

    body = api.get("/api/quota/").json()

    assert body["resets_at"] is None
    assert body["requests"] == {"limit": 100, "used": 0, "reserved": 0, "remaining": 100}
    assert body["tokens"] == {"limit": 5000, "used": 0, "remaining": 5000}


def test_quota_shows_only_the_callers_own_usage(api, user, other_user):
    QuotaFactory(user=other_user, requests_used=50)

    assert api.get("/api/quota/").json()["requests"]["used"] == 0


def test_quota_without_credentials_is_401_with_a_token_challenge():
    response = APIClient().get("/api/quota/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["code"] == "not_authenticated"


def test_quota_is_described_in_the_schema(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()

    operation = schema["paths"]["/api/quota/"]["get"]
    reference = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][reference.rsplit("/", 1)[1]]
    assert set(component["properties"]) == {"period", "period_start", "resets_at", "requests", "tokens"}
