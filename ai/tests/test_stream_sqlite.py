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
def sqlite_server(tmp_path_factory):
    """daphne on a fresh SQLite file, migrated and set up as `make run` does; (server, demo token)."""
    folder = tmp_path_factory.mktemp("sqlite")
    database_url = f"sqlite:///{folder / 'db.sqlite3'}"
    env = {**os.environ, "DATABASE_URL": database_url}
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True)
    setup = subprocess.run([*manage, "setup_demo"], env=env, check=True, capture_output=True, text=True)
    token = re.search(r"Demo API token: (\w+)", setup.stdout).group(1)
    server = LiveASGIServer(
        server="daphne",
        env={"QUOTA_DEFAULT_REQUEST_LIMIT": "12"},
        database_url=database_url,
        log_path=folder / "daphne.log",
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
