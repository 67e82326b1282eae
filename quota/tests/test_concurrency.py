"""Exactness under parallelism: with R requests remaining, exactly R of many parallel reservations start."""

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from quota.models import Reservation
from quota.services import quota_commit, quota_release, quota_reserve, quota_status
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
