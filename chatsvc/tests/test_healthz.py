"""`/healthz`: 200 while the database answers, 503 when it does not."""

import json
import time

import pytest

pytestmark = pytest.mark.django_db


def test_healthz_is_ok_when_the_database_answers(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_needs_no_credentials_and_no_session(client):
    response = client.get("/healthz")

    assert "Set-Cookie" not in response
    assert response.status_code == 200


# The child process below is a real Django whose DATABASE_URL points at a closed port: no mock.
UNREACHABLE_HEALTHZ = """
import json, time
from django.test import Client
started = time.monotonic()
response = Client().get("/healthz", HTTP_HOST="localhost")
print(json.dumps({"status": response.status_code, "body": response.json(),
                  "seconds": time.monotonic() - started}))
"""


@pytest.mark.parametrize("pooled", [True, False], ids=["pool", "no-pool"])
def test_healthz_is_unavailable_when_the_database_cannot_be_reached(run_django, pooled):
    """A closed port on localhost refuses at once; the pool gives up after DATABASE_POOL_TIMEOUT."""
    env = {"DATABASE_URL": "postgres://postgres@127.0.0.1:9/chatsvc", "DATABASE_POOL_TIMEOUT": "2"}
    code = UNREACHABLE_HEALTHZ
    if not pooled:
        code = (
            "from django.conf import settings\n"
            "settings.DATABASES['default']['OPTIONS'].pop('pool')\n"
            "settings.DATABASES['default']['OPTIONS']['connect_timeout'] = 2\n" + code
        )

    started = time.monotonic()
    result = run_django(code, **env)

    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["status"] == 503
    assert answer["body"] == {"status": "unavailable"}
    assert time.monotonic() - started < 30
