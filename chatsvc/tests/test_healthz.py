"""`/healthz`: 200 while every dependency answers (the database; the channels layer with REDIS_URL),
503 naming the one that does not."""

import json
import time

import httpx
import pytest

from ai.tests.sse_client import wait_for
from conftest import RedisServer, StartingServer, _free_port

pytestmark = pytest.mark.django_db


def test_healthz_is_ok_when_the_database_answers(client, settings):
    settings.REDIS_URL = ""

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


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
    assert answer["body"] == {"status": "unavailable", "database": "unavailable"}
    assert time.monotonic() - started < 30


# --- Live servers -------------------------------------------------------------------------------------


@pytest.fixture
def redis_server():
    server = RedisServer()
    yield server
    if server.process.poll() is None:
        server.stop()


@pytest.mark.django_db(transaction=True)
def test_healthz_names_the_channels_layer_and_fails_while_its_redis_is_down(
    asgi_server_factory, redis_server
):
    server = asgi_server_factory(fresh=True, REDIS_URL=redis_server.url, DATABASE_POOL_TIMEOUT="3")
    try:
        up = httpx.get(f"{server.url}/healthz", timeout=10)
        assert up.status_code == 200
        assert up.json() == {"status": "ok", "database": "ok", "channels": "ok"}

        redis_server.stop()
        down = httpx.get(f"{server.url}/healthz", timeout=10)
        assert down.status_code == 503
        assert down.json() == {"status": "unavailable", "database": "ok", "channels": "unavailable"}

        restarted = RedisServer(port=redis_server.port)
        try:
            wait_for(lambda: httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200)
        finally:
            restarted.stop()
    finally:
        server.stop()


def test_a_server_whose_database_is_unreachable_starts_and_says_so(tmp_path):
    """A closed port: the start-up sweep gives up after the pool's timeout, the server serves; /healthz
    says 503 and /metrics (with its token, no database needed) counts the failed connections."""
    closed = f"postgres://postgres@127.0.0.1:{_free_port()}/chatsvc"
    env = {"DATABASE_POOL_TIMEOUT": "2", "METRICS_DIR": str(tmp_path / "metrics"), "METRICS_TOKEN": "t"}
    server = StartingServer(server="daphne", env=env, database_url=closed, log_path=tmp_path / "daphne.log")
    try:
        response = httpx.get(f"{server.url}/healthz", timeout=10)
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable", "database": "unavailable"}
        assert "start-up sweep skipped" in server.log()

        scrape = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer t"}, timeout=10)
        assert scrape.status_code == 200
        errors = next(
            line
            for line in scrape.text.splitlines()
            if line.startswith("chatsvc_db_pool_connection_errors_total ")
        )
        assert float(errors.split()[1]) > 0
    finally:
        server.stop()
