"""Many streams at once on one server process: quota stays exact, connections stay few."""

import asyncio
import json
import threading

import httpx
import psycopg
import pytest

from ai.tests.sse_client import stream_all
from conversations.models import Message
from quota.models import Quota, Reservation

pytestmark = pytest.mark.django_db(transaction=True)

APP_NAME = "chatsvc-concurrency-test"


def test_parallel_streams_admit_exactly_the_remaining_quota(live_asgi, token, user):
    Quota.objects.create(user=user, request_limit=5)
    bodies = [{"message": f"request {n} [mock:chunks=3][mock:delay_ms=200]"} for n in range(20)]
    results = asyncio.run(stream_all(live_asgi.url, token.key, bodies))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 5 + [429] * 15
    assert all(types[-1] == "done" for status, types in results if status == 200)
    quota = Quota.objects.get(user=user)
    assert quota.requests_used == 5
    assert Reservation.objects.count() == 0
    assert Message.objects.filter(role="assistant", status="complete").count() == 5


POOL_MAX = 4
STREAMS = 200


def test_two_hundred_streams_waiting_on_the_adapter_hold_no_database_connection(
    asgi_server_factory, test_database_url, token, user
):
    """200 streams parked at once on a slow adapter, on a server whose pool has at most 4 connections.

    A stream that held a connection while it waits could not even start (the pool would be empty);
    those that did start leave every connection idle (none `idle in transaction`), and a request that
    needs the database is still answered meanwhile."""
    server = asgi_server_factory(
        QUOTA_DEFAULT_REQUEST_LIMIT="none", PGAPPNAME=APP_NAME, DATABASE_POOL_MAX_SIZE=str(POOL_MAX)
    )
    peak = 0
    stop = threading.Event()

    def server_connections(watcher) -> list[str]:
        """The state of each of the server's connections (`idle`, `active`, `idle in transaction` …)."""
        rows = watcher.execute(
            "SELECT state FROM pg_stat_activity WHERE application_name = %s", [APP_NAME]
        ).fetchall()
        return [state for (state,) in rows]

    def sample():
        nonlocal peak
        with psycopg.connect(test_database_url, autocommit=True) as watcher:
            while not stop.is_set():
                peak = max(peak, len(server_connections(watcher)))
                stop.wait(0.05)

    async def scenario():
        headers = {"Authorization": f"Token {token.key}"}
        limits = httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=0)
        parked, all_parked, ended = 0, asyncio.Event(), 0
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:

            async def one(number: int) -> list[str]:
                nonlocal parked, ended
                body = {"message": f"stream {number} [mock:chunks=3][mock:delay_ms=10000]"}
                types = []
                async with client.stream(
                    "POST", "/api/ai/chat/stream", json=body, headers=headers
                ) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            types.append(json.loads(line.removeprefix("data: "))["type"])
                            if types == ["start", "chunk"]:  # now waiting for the adapter's next chunk
                                parked += 1
                                if parked == STREAMS:
                                    all_parked.set()
                ended += 1
                return types

            streams = [asyncio.create_task(one(number)) for number in range(STREAMS)]
            try:
                await asyncio.wait_for(all_parked.wait(), timeout=60)
            except TimeoutError:
                raise AssertionError(f"{parked} of {STREAMS} streams got to wait on the adapter") from None
            with psycopg.connect(test_database_url, autocommit=True) as watcher:
                states = server_connections(watcher)
            still_open = STREAMS - ended
            quota = await client.get("/api/quota/", headers=headers)  # needs a connection of the pool
            return states, still_open, quota.status_code, await asyncio.gather(*streams)

    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        states, still_open, quota_status, results = asyncio.run(scenario())
    finally:
        stop.set()
        watcher.join()

    assert still_open == STREAMS, "every stream was waiting on the adapter when the connections were read"
    assert 0 < len(states) <= POOL_MAX, states
    assert set(states) == {"idle"}, states  # in the pool; none held in a transaction across a wait
    assert quota_status == 200
    assert 0 < peak <= POOL_MAX, f"{peak} connections, the pool's bound is {POOL_MAX}"
    assert results == [["start", "chunk", "chunk", "chunk", "done"]] * STREAMS
    assert Quota.objects.get(user=user).requests_used == STREAMS
