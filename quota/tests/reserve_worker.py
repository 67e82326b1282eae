"""A separate OS process for the concurrency tests: many reservations at once, from threads.

Run as `python -m quota.tests.reserve_worker USERNAME THREADS START_AT` with DATABASE_URL naming the
test database; all threads fire at the wall-clock time START_AT (so that two processes overlap), and
the process prints `{"reserved": n, "refused": m}`.
"""

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import django


def reserve_at_once(user, threads: int, start_at: float | None = None) -> list[bool]:
    """`threads` reservations for `user`, one per thread, each on its own connection, released
    together by a barrier (and, with `start_at`, at that wall-clock time); True where one was made."""
    from django.db import connection

    from quota.exceptions import QuotaExceeded
    from quota.services import quota_reserve

    barrier = threading.Barrier(threads)

    def attempt() -> bool:
        try:
            connection.ensure_connection()  # opened before the start, so all threads race the lock
            barrier.wait(timeout=60)  # a thread that could not connect breaks it, not the test run
            if start_at is not None:
                time.sleep(max(0.0, start_at - time.time()))
            quota_reserve(user=user)
            return True
        except QuotaExceeded:
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda _: attempt(), range(threads)))


def main(username: str, threads: int, start_at: float) -> None:
    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection

    user = get_user_model().objects.get(username=username)
    connection.close()
    outcomes = reserve_at_once(user, threads, start_at)
    print(json.dumps({"reserved": outcomes.count(True), "refused": outcomes.count(False)}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
