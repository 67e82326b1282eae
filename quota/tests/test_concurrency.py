"""Exactness under parallelism: with R requests remaining, exactly R of many parallel reservations start."""

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from quota.models import Reservation
from quota.services import QuotaStatus, quota_commit, quota_release, quota_reserve, quota_status
from quota.tests.factories import QuotaFactory, ReservationFactory
from quota.tests.reserve_worker import reserve_at_once

pytestmark = pytest.mark.django_db(transaction=True)

ATTEMPTS = 50


@pytest.fixture
def seven_remaining(settings, user):
    """`user` may start 7 more requests: limit 10, 2 used, 1 reserved (plus an expired reservation)."""
    settings.QUOTA_PERIOD = "day"
    settings.QUOTA_DEFAULT_REQUEST_LIMIT = 10
    settings.QUOTA_DEFAULT_TOKEN_LIMIT = None
    quota = QuotaFactory(user=user, requests_used=2)
    ReservationFactory(quota=quota)
    ReservationFactory(quota=quota, expires_at=timezone.now() - timedelta(seconds=1))
    assert quota_status(user=user).requests_remaining == 7
    return user


@pytest.fixture
def pool_for_every_thread():
    """A connection pool wide enough that all ATTEMPTS threads hold a connection at the same time."""
    pool_options = connection.settings_dict["OPTIONS"]["pool"]
    original = dict(pool_options)
    connection.close()
    connection.close_pool()
    pool_options["max_size"] = ATTEMPTS + 2
    yield
    connection.close()
    connection.close_pool()
    pool_options.clear()
    pool_options.update(original)


def test_exactly_the_remaining_requests_are_reserved_from_parallel_threads(
    seven_remaining, pool_for_every_thread
):
    outcomes = reserve_at_once(seven_remaining, ATTEMPTS)

    assert (outcomes.count(True), outcomes.count(False)) == (7, 43)
    status = quota_status(user=seven_remaining)
    assert (status.requests_used, status.requests_reserved, status.requests_remaining) == (2, 8, 0)


def test_exactly_the_remaining_requests_are_reserved_from_two_processes(seven_remaining, test_database_url):
    threads = ATTEMPTS // 2
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsvc.settings",
        "DATABASE_URL": test_database_url,
        "DATABASE_POOL_MAX_SIZE": str(threads + 2),
        "QUOTA_PERIOD": "day",
        "QUOTA_DEFAULT_REQUEST_LIMIT": "10",
        "QUOTA_DEFAULT_TOKEN_LIMIT": "none",
    }
    start_at = str(time.time() + 4)  # both processes have started Django by then
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "quota.tests.reserve_worker",
                seven_remaining.username,
                str(threads),
                start_at,
            ],
            env=env,
            cwd=django_settings.BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    reports = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=60)
        assert worker.returncode == 0, stderr
        reports.append(json.loads(stdout))

    assert sum(report["reserved"] for report in reports) == 7
    assert sum(report["refused"] for report in reports) == 43
    assert all(report["reserved"] + report["refused"] == threads for report in reports)
    assert Reservation.objects.filter(quota__user=seven_remaining).count() == 8


def test_parallel_commits_and_releases_keep_the_counters_exact(settings, user):
    settings.QUOTA_DEFAULT_REQUEST_LIMIT = 40
    settings.QUOTA_DEFAULT_TOKEN_LIMIT = None
    reservations = [quota_reserve(user=user) for _ in range(40)]
    connection.close()
    barrier = threading.Barrier(20)

    def settle(index: int) -> None:
        try:
            barrier.wait()
            for reservation in reservations[index::20]:  # odd threads release, even ones commit
                if index % 2:
                    quota_release(reservation_id=reservation.id)
                else:
                    quota_commit(reservation_id=reservation.id, tokens=7)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(settle, range(20)))

    status = quota_status(user=user)
    assert (status.requests_used, status.tokens_used, status.requests_reserved) == (20, 140, 0)
    assert status.requests_remaining == 20


def test_a_stream_ending_and_one_starting_for_the_same_user_do_not_deadlock(
    settings, user, test_database_url
):
    """The finish of a stream whose reservation expired (its heartbeats failed) and a new start of the
    same user, at their worst interleaving: the finish has run its first statement, the start runs until
    it waits for a lock the finish holds, then the finish goes on."""
    settings.QUOTA_DEFAULT_REQUEST_LIMIT = 10
    settings.QUOTA_DEFAULT_TOKEN_LIMIT = None
    quota = QuotaFactory(user=user, requests_used=2)
    expired = ReservationFactory(quota=quota, expires_at=timezone.now() - timedelta(seconds=1))
    connection.close()
    finish_began = threading.Barrier(3)  # the finish, the start and this thread
    start_waits = threading.Event()
    starter_pid: list[int] = []
    outcome: dict[str, object] = {}

    def pause_after_first_statement(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "paused" not in outcome:
            outcome["paused"] = sql
            finish_began.wait()
            start_waits.wait(timeout=30)
        return result

    def finish() -> None:
        try:
            with connection.execute_wrapper(pause_after_first_statement):
                outcome["finish"] = quota_commit(reservation_id=expired.id, tokens=7)
        except Exception as error:  # the asserts below show it
            outcome["finish"] = error
        finally:
            connection.close()

    def start() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                starter_pid.append(cursor.fetchone()[0])
            finish_began.wait()
            outcome["start"] = quota_reserve(user=user)
        except Exception as error:
            outcome["start"] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=finish), threading.Thread(target=start)]
    for thread in threads:
        thread.start()
    finish_began.wait(timeout=30)
    with psycopg.connect(test_database_url, autocommit=True) as watcher:
        deadline = time.monotonic() + 30
        blockers = []
        while not blockers and time.monotonic() < deadline and threads[1].is_alive():
            time.sleep(0.01)
            (blockers,) = watcher.execute("SELECT pg_blocking_pids(%s)", starter_pid).fetchone()
    start_waits.set()
    for thread in threads:
        thread.join(timeout=60)

    assert blockers, "the start waited for a lock of the finish"
    assert isinstance(outcome["finish"], QuotaStatus), outcome["finish"]
    assert isinstance(outcome["start"], Reservation), outcome["start"]
    status = quota_status(user=user)
    assert (status.requests_used, status.tokens_used, status.requests_reserved) == (3, 7, 1)
    assert list(Reservation.objects.values_list("id", flat=True)) == [outcome["start"].id]
