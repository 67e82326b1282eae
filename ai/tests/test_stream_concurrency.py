"""Many streams at once on one server process: quota stays exact, connections stay few."""

import asyncio
import threading

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


def test_two_hundred_slow_streams_hold_few_database_connections(
    asgi_server_factory, test_database_url, token, user
):
    server = asgi_server_factory(QUOTA_DEFAULT_REQUEST_LIMIT="none", PGAPPNAME=APP_NAME)
    bodies = [{"message": f"stream {n} [mock:chunks=4][mock:delay_ms=500]"} for n in range(200)]
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        with psycopg.connect(test_database_url, autocommit=True) as watcher:
            while not stop.is_set():
                (count,) = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APP_NAME]
                ).fetchone()
                peak = max(peak, count)
                stop.wait(0.05)

    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        results = asyncio.run(stream_all(server.url, token.key, bodies))
    finally:
        stop.set()
        watcher.join()
    assert [status for status, _ in results] == [200] * 200
    assert all(types[0] == "start" and types[-1] == "done" for _, types in results)
    assert peak > 0, "the watcher saw the server's connections"
    assert peak <= 25, f"{peak} connections for 200 open streams"
    assert Quota.objects.get(user=user).requests_used == 200
