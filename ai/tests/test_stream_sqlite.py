"""`make run`'s database: the stream end to end on SQLite (a real daphne, a migrated file database)."""

import asyncio
import os
import re
import subprocess
import sys

import httpx
import pytest

from ai.tests.sse_client import events, stream_all
from conftest import LiveASGIServer


@pytest.fixture(scope="module")
def sqlite_file(tmp_path_factory):
    """A fresh SQLite file, migrated and set up as `make run` does: its DATABASE_URL."""
    database_url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'db.sqlite3'}"
    manage(database_url, "migrate", "--noinput", "-v0")
    return database_url


def manage(database_url: str, *arguments: str) -> str:
    """`manage.py <arguments>` on the database of `database_url`; what it printed."""
    env = {**os.environ, "DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "manage.py", *arguments], env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


@pytest.fixture(scope="module")
def sqlite_server(sqlite_file, tmp_path_factory):
    """daphne on `sqlite_file`; (server, demo token)."""
    token = re.search(r"Demo API token: (\w+)", manage(sqlite_file, "setup_demo")).group(1)
    server = LiveASGIServer(
        server="daphne",
        env={"QUOTA_DEFAULT_REQUEST_LIMIT": "12"},
        database_url=sqlite_file,
        log_path=tmp_path_factory.mktemp("sqlite-server") / "daphne.log",
    )
    yield server, token
    server.stop()


def test_a_conversation_streams_and_continues_on_sqlite(sqlite_server):
    server, token = sqlite_server
    with httpx.Client(timeout=30) as client:
        first = events(client, server.url, token, {"message": "Hello [mock:chunks=3][mock:delay_ms=0]"})
        again = events(
            client,
            server.url,
            token,
            {"message": "More [mock:echo_context]", "conversation_id": first[0].data["conversation_id"]},
        )
    assert [f.type for f in first] == ["start", "chunk", "chunk", "chunk", "done"]
    assert again[-1].type == "done"
    assert again[-1].data["quota"]["requests_remaining"] == 10
    assert '"More [mock:echo_context]"' in "".join(f.data["content"] for f in again if f.type == "chunk")


def test_parallel_streams_on_sqlite_neither_lock_up_nor_overrun_the_quota(sqlite_server):
    server, token = sqlite_server
    used = httpx.get(f"{server.url}/api/quota/", headers={"Authorization": f"Token {token}"}).json()
    remaining = used["requests"]["remaining"]
    bodies = [{"message": f"parallel {n} [mock:chunks=3][mock:delay_ms=50]"} for n in range(remaining + 4)]
    results = asyncio.run(stream_all(server.url, token, bodies))
    assert sorted(status for status, _ in results) == [200] * remaining + [429] * 4
    assert all(types[-1] == "done" for status, types in results if status == 200)


EVE = """
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from conversations.models import Message
eve, _ = User.objects.get_or_create(username="eve")
"""


def as_eve(database_url: str, code: str) -> str:
    """What `code` prints, run by `manage.py shell` after `EVE`."""
    return manage(database_url, "shell", "-v0", "-c", EVE + code).strip()


def test_a_token_deleted_after_a_start_starts_nothing_more_on_sqlite(sqlite_server, sqlite_file):
    """The remembered token's check in the reservation's statement, in SQLite's SQL."""
    server, _ = sqlite_server
    key = as_eve(sqlite_file, "print(Token.objects.create(user=eve).key)")
    body = {"message": "Hello [mock:chunks=2][mock:delay_ms=0]"}
    with httpx.Client(timeout=30) as client:
        assert events(client, server.url, key, body)[-1].type == "done"  # remembered from now on
        as_eve(sqlite_file, "Token.objects.filter(user=eve).delete()")
        response = client.post(
            f"{server.url}/api/ai/chat/stream", json=body, headers={"Authorization": f"Token {key}"}
        )

    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token."
    assert as_eve(sqlite_file, "print(Message.objects.filter(conversation__user=eve).count())") == "2"
