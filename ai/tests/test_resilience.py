"""Faults an operator meets: a database restarted mid-answer, a database down, a cold burst, a server
beyond its capacity. Each on real daphne processes; the restarted PostgreSQL is a cluster of the
test's own (initdb + pg_ctl on a free port), never the machine's."""

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psycopg
import pytest

from ai.tests.sse_client import events, iter_frames, post_together, stream, stream_all, wait_for
from conftest import RedisServer, StartingServer, _free_port

pytestmark = pytest.mark.django_db(transaction=True)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
BASE_DIR = Path(__file__).resolve().parents[2]


class OwnPostgres:
    """A PostgreSQL cluster of this test's own, run as the `postgres` user (it refuses root)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="chatsvc-pg-"))
        shutil.chown(self.dir, "postgres")
        self.port = _free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(PG_BIN / "initdb", "-D", self.dir / "data", "-A", "trust", "-U", "postgres")
        self.start()

    def _as_postgres(self, *command) -> None:
        # No pipes: the server pg_ctl starts would hold them open (its output goes to its log, `-l`).
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, command)],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            PG_BIN / "pg_ctl", "-D", self.dir / "data", "-o", options, "-w", "-l", self.dir / "log", "start"
        )

    def stop(self) -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def query(self, sql: str, *params):
        with psycopg.connect(self.url) as connection:
            return connection.execute(sql, params).fetchall()

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def django_command(database_url: str, code: str) -> str:
    """Run `code` after `django.setup()` in a child process on `database_url`; return what it prints."""
    env = {**os.environ, "DATABASE_URL": database_url, "DEBUG": "true"}
    done = subprocess.run(
        [sys.executable, "-c", f"import django\ndjango.setup()\n{code}"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def own_postgres():
    cluster = OwnPostgres()
    try:
        django_command(
            cluster.url,
            "from django.core.management import call_command\ncall_command('migrate', verbosity=0)",
        )
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def own_token(own_postgres) -> str:
    """A user of the own cluster, with unlimited quota, and its API token."""
    return django_command(
        own_postgres.url,
        "from django.contrib.auth import get_user_model\n"
        "from rest_framework.authtoken.models import Token\n"
        "from quota.models import Quota\n"
        "user = get_user_model().objects.create_user('carol', password='carol-password')\n"
        "Quota.objects.create(user=user, unlimited_requests=True)\n"
        "print(Token.objects.create(user=user).key)",
    )


def test_a_database_restart_mid_answer_loses_no_answer(asgi_server_factory, own_postgres, own_token):
    server = asgi_server_factory(fresh=True, DATABASE_URL=own_postgres.url, DATABASE_POOL_MAX_SIZE="10")
    try:
        bodies = [{"message": f"answer {n} [mock:chunks=40][mock:delay_ms=100]"} for n in range(50)]

        async def run():
            streams = asyncio.ensure_future(stream_all(server.url, own_token, bodies))
            await asyncio.sleep(1.5)
            await asyncio.to_thread(own_postgres.restart)
            return await streams

        results = asyncio.run(run())
    finally:
        server.stop()
    assert [status for status, _ in results] == [200] * 50
    assert all(types[-1] == "done" for _, types in results), {tuple(types[-1:]) for _, types in results}
    assert all(types.count("chunk") == 40 for _, types in results)
    rows = own_postgres.query(
        "SELECT status, count(*), min(completion_tokens) FROM conversations_message "
        "WHERE role = 'assistant' GROUP BY status"
    )
    assert rows == [("complete", 50, 40)]
    words = own_postgres.query(
        "SELECT array_length(regexp_split_to_array(content, ' '), 1) FROM conversations_message "
        "WHERE role = 'assistant'"
    )
    assert {count for (count,) in words} == {40}
    assert own_postgres.query("SELECT count(*) FROM quota_reservation") == [(0,)]
    assert own_postgres.query("SELECT requests_used FROM quota_quota") == [(50,)]


def test_a_database_down_at_the_start_answers_503_and_recovers_by_itself(
    asgi_server_factory, own_postgres, own_token
):
    server = asgi_server_factory(fresh=True, DATABASE_URL=own_postgres.url, DATABASE_POOL_TIMEOUT="2")
    headers = {"Authorization": f"Token {own_token}"}
    try:
        own_postgres.stop()
        try:
            refused = httpx.post(
                f"{server.url}/api/ai/chat/stream", json={"message": "hi"}, headers=headers, timeout=30
            )
            health = httpx.get(f"{server.url}/healthz", timeout=30)
        finally:
            own_postgres.start()
        assert refused.status_code == 503
        assert refused.json()["code"] == "database_unavailable"
        assert int(refused.headers["Retry-After"]) > 0
        assert health.status_code == 503
        back = wait_for(
            lambda: (
                httpx.post(
                    f"{server.url}/api/ai/chat/stream",
                    json={"message": "hi [mock:chunks=2][mock:delay_ms=0]"},
                    headers=headers,
                    timeout=30,
                ).status_code
                == 200
            ),
            timeout=20,
        )
        assert back
    finally:
        server.stop()


def test_a_cold_burst_of_300_starts_completes_without_a_failure(asgi_server_factory, token):
    server = asgi_server_factory(fresh=True, QUOTA_DEFAULT_REQUEST_LIMIT="none")
    try:
        bodies = [{"message": f"burst {n} [mock:chunks=5][mock:delay_ms=50]"} for n in range(300)]
        results = asyncio.run(stream_all(server.url, token.key, bodies))
    finally:
        server.stop()
    statuses = [status for status, _ in results]
    assert statuses.count(200) == 300, {status: statuses.count(status) for status in set(statuses)}
    assert all(types[-1] == "done" for _, types in results)


def test_beyond_capacity_a_start_is_refused_early_with_503_overloaded(asgi_server_factory, token, user):
    from conversations.models import Message
    from quota.models import Reservation

    server = asgi_server_factory(
        fresh=True,
        DATABASE_POOL_MAX_SIZE="1",
        AI_START_QUEUE_TIMEOUT="0.01",
        QUOTA_DEFAULT_REQUEST_LIMIT="none",
    )
    try:
        body = {"message": "queue [mock:chunks=1][mock:delay_ms=0]"}
        results = asyncio.run(post_together(server.url, token.key, body, count=200))
    finally:
        server.stop()
    refused = [error for status, error in results if status == 503]
    served = [frames for status, frames in results if status == 200]
    assert refused, "a queue of 200 on one slot waiting 10 ms at most refuses some"
    assert len(refused) + len(served) == 200, {status for status, _ in results}
    assert {error["code"] for error in refused} == {"overloaded"}
    assert all(frames[-1].type == "done" for frames in served)
    assert Message.objects.filter(role="user").count() == len(served)
    assert not Reservation.objects.exists()


@pytest.fixture
def own_redis():
    server = RedisServer()
    yield server
    if server.process.poll() is None:
        server.stop()


def test_a_redis_restart_spares_local_readers_and_remote_ones_read_again_once_it_is_back(
    asgi_server_factory, own_redis, token, user
):
    from conversations.models import Message

    settings = {"REDIS_URL": own_redis.url, "AI_STREAM_OWNER_TIMEOUT": "1"}
    owner = asgi_server_factory(fresh=True, **settings)
    other = asgi_server_factory(fresh=True, **settings)
    auth = {"Authorization": f"Token {token.key}"}
    body = {"message": "[mock:chunks=120][mock:delay_ms=50]"}
    try:
        with httpx.Client(timeout=30) as client, stream(client, owner.url, token.key, body) as response:
            frames = iter_frames(response)
            message_id = next(frames).data["message_id"]
            read_url = f"{other.url}/api/ai/chat/stream/{message_id}"
            with client.stream("GET", read_url, headers=auth) as remote:
                remote_frames = iter_frames(remote)
                next(remote_frames)
                own_redis.stop()
                remote_end = [f for f in remote_frames if f.data is not None][-1]
            stopped_while_down = client.post(f"{read_url}/stop", headers=auth)
            own_redis.restart()
            again = wait_for(
                lambda: (
                    (r := client.get(read_url, headers={**auth, "Last-Event-ID": "100"})).status_code == 200
                    and r
                ),
                timeout=15,
            )
            local_end = [f for f in frames if f.data is not None][-1]
    finally:
        owner.stop()
        other.stop()
    assert remote_end.type == "error"
    assert (remote_end.data["code"], remote_end.data["retryable"]) == ("interrupted", True)
    assert stopped_while_down.status_code == 202
    assert local_end.type == "done", "the owner's own reader never needed Redis"
    assert [f.type for f in iter_frames(again) if f.data][-1] == "done"
    assert Message.objects.get(pk=message_id).status == "complete"


def test_an_answer_begun_while_redis_is_down_is_read_elsewhere_once_it_is_back(
    asgi_server_factory, own_redis, token
):
    """The owner could not join the answer's group while Redis was down: it joins once Redis is back
    (redis-py subscribes again only to what it had subscribed to)."""
    settings = {"REDIS_URL": own_redis.url, "AI_STREAM_OWNER_TIMEOUT": "1"}
    owner = asgi_server_factory(fresh=True, **settings)
    other = asgi_server_factory(fresh=True, **settings)
    auth = {"Authorization": f"Token {token.key}", "Last-Event-ID": "150"}
    body = {"message": "[mock:chunks=200][mock:delay_ms=50]"}
    try:
        own_redis.stop()
        with httpx.Client(timeout=60) as client, stream(client, owner.url, token.key, body) as response:
            frames = iter_frames(response)
            message_id = next(frames).data["message_id"]
            own_redis.restart()
            read_url = f"{other.url}/api/ai/chat/stream/{message_id}"
            again = wait_for(
                lambda: (r := client.get(read_url, headers=auth)).status_code == 200 and r, timeout=30
            )
            local_end = [f for f in frames if f.data is not None][-1]
    finally:
        owner.stop()
        other.stop()
    read = [f for f in iter_frames(again) if f.data is not None]
    assert [int(f.id) for f in read] == list(range(151, 203))  # the events after 150, none missing
    assert read[-1].type == local_end.type == "done"


def test_a_server_starts_with_redis_down_and_serves_local_answers(test_database_url, tmp_path, token):
    closed = f"redis://127.0.0.1:{_free_port()}/0"
    env = {"REDIS_URL": closed, "DEBUG": "true", "DATABASE_POOL_MAX_SIZE": "4"}
    log = tmp_path / "daphne.log"
    server = StartingServer(server="daphne", env=env, database_url=test_database_url, log_path=log)
    try:
        health = httpx.get(f"{server.url}/healthz", timeout=30)
        with httpx.Client(timeout=30) as client:
            frames = events(client, server.url, token.key, {"message": "[mock:chunks=3][mock:delay_ms=0]"})
    finally:
        server.stop()
    assert health.status_code == 503
    assert health.json() == {"status": "unavailable", "database": "ok", "channels": "unavailable"}
    assert [f.type for f in frames] == ["start", "chunk", "chunk", "chunk", "done"]
