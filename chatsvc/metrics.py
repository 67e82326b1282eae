"""Prometheus metrics: their definitions, the hooks the code calls, and what `GET /metrics` answers.

Every server process writes its values to files of `settings.METRICS_DIR` (prometheus_client's
multiprocess mode, switched on by settings through `PROMETHEUS_MULTIPROC_DIR`), and a scrape of any
process sums them all. Gauges count live processes only ("livesum"): a process's gauge files are removed
when it exits, or by the next scrape or start once it is gone. Counters and histograms keep what dead
processes counted, so they only go up while the directory lives.

The hooks are called once per answer, reader or error, never per chunk: each is a few writes to a
memory-mapped file.
"""

import atexit
import glob
import logging
import os
import re
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

logger = logging.getLogger(__name__)

POOL_STATS_INTERVAL = 5.0  # seconds between two publications of a process's database pool stats


def _metrics_dir() -> str:
    path = Path(settings.METRICS_DIR)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid != os.getuid():
        raise ImproperlyConfigured(
            f"METRICS_DIR {path} belongs to another user: set METRICS_DIR to a directory of yours."
        )
    return str(path)


METRICS_DIR = _metrics_dir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process holds that pid
    return True


def sweep_dead_processes() -> None:
    """Drop the gauge files of processes that are gone (a crash skips the clean-up at exit)."""
    for filename in glob.glob(os.path.join(METRICS_DIR, "gauge_live*_*.db")):
        pid = int(re.search(r"_(\d+)\.db$", filename)[1])
        if pid != os.getpid() and not _pid_alive(pid):
            forget_process(pid)


def forget_process(pid: int) -> None:
    """`mark_process_dead()`, which another process starting at the same moment may be doing for the
    same pid: a file it removed first is no error (the others are still removed)."""
    while True:
        try:
            return mark_process_dead(pid, METRICS_DIR)
        except FileNotFoundError:
            continue  # gone meanwhile: the next pass lists only what is left


# A previous process with this pid may have left gauge files: they are not this process's values.
forget_process(os.getpid())
sweep_dead_processes()
atexit.register(forget_process, os.getpid())

# --- Answers ---------------------------------------------------------------------------------------
ANSWERS_IN_PROGRESS = Gauge(
    "chatsvc_answers_in_progress", "Answers being generated now.", ["adapter"], multiprocess_mode="livesum"
)
ANSWERS = Counter(
    "chatsvc_answers_total",
    "Answers ended, by outcome: complete, stopped, failed:<code>, interrupted.",
    ["adapter", "outcome"],
)
ANSWER_READERS = Gauge("chatsvc_answer_readers", "Readers of live answers now.", multiprocess_mode="livesum")
FIRST_CHUNK_SECONDS = Histogram(
    "chatsvc_first_chunk_seconds",
    "From an answer's start to its first chunk.",
    ["adapter"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
ANSWER_SECONDS = Histogram(
    "chatsvc_answer_seconds",
    "From an answer's start to its end, whatever the outcome.",
    ["adapter"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
TOKENS = Counter(
    "chatsvc_tokens_total", "Tokens of ended answers, by kind: prompt, completion.", ["adapter", "kind"]
)

# --- Refusals and errors ---------------------------------------------------------------------------
QUOTA_REFUSALS = Counter(
    "chatsvc_quota_refusals_total", "Streams refused by quota, by the exhausted resource.", ["resource"]
)
HTTP_ERRORS = Counter(
    "chatsvc_http_errors_total",
    "JSON error answers of the API, by status and error code.",
    ["status", "code"],
)

# --- The database pool (psycopg_pool's get_stats(), published by every process) -----------------------
POOL_GAUGES = {
    "pool_size": Gauge("chatsvc_db_pool_size", "Database connections open.", multiprocess_mode="livesum"),
    "pool_available": Gauge(
        "chatsvc_db_pool_available", "Database connections open and idle.", multiprocess_mode="livesum"
    ),
    "pool_max": Gauge(
        "chatsvc_db_pool_max", "Database connections the pools may open at most.", multiprocess_mode="livesum"
    ),
    "requests_waiting": Gauge(
        "chatsvc_db_pool_requests_waiting",
        "Requests waiting now for a database connection.",
        multiprocess_mode="livesum",
    ),
}
POOL_COUNTERS = {
    "requests_num": (
        Counter("chatsvc_db_pool_requests_total", "Database connections asked of the pools."),
        1,
    ),
    "requests_queued": (
        Counter("chatsvc_db_pool_requests_queued_total", "Database connection requests that had to wait."),
        1,
    ),
    "requests_wait_ms": (
        Counter("chatsvc_db_pool_wait_seconds_total", "Time spent waiting for a database connection."),
        0.001,
    ),
    "requests_errors": (
        Counter(
            "chatsvc_db_pool_request_errors_total", "Database connection requests that failed (timeouts)."
        ),
        1,
    ),
    "connections_errors": (
        Counter("chatsvc_db_pool_connection_errors_total", "Failed attempts to connect to the database."),
        1,
    ),
    "connections_lost": (
        Counter("chatsvc_db_pool_connections_lost_total", "Pooled database connections found broken."),
        1,
    ),
}


# --- The hooks -------------------------------------------------------------------------------------
def answer_started(adapter: str) -> None:
    ANSWERS_IN_PROGRESS.labels(adapter).inc()


def first_chunk(adapter: str, seconds: float) -> None:
    FIRST_CHUNK_SECONDS.labels(adapter).observe(seconds)


def answer_ended(
    adapter: str, outcome: str, seconds: float, *, prompt_tokens: int = 0, completion_tokens: int = 0
) -> None:
    """`outcome`: complete, stopped, failed:<error code> or interrupted; call once per answer_started()."""
    ANSWERS_IN_PROGRESS.labels(adapter).dec()
    ANSWERS.labels(adapter, outcome).inc()
    ANSWER_SECONDS.labels(adapter).observe(seconds)
    if prompt_tokens:
        TOKENS.labels(adapter, "prompt").inc(prompt_tokens)
    if completion_tokens:
        TOKENS.labels(adapter, "completion").inc(completion_tokens)


def reader_opened() -> None:
    ANSWER_READERS.inc()


def reader_closed() -> None:
    ANSWER_READERS.dec()


def quota_refused(resource: str) -> None:
    QUOTA_REFUSALS.labels(resource).inc()


def http_error(status: int, code: str) -> None:
    HTTP_ERRORS.labels(str(status), code).inc()


if not settings.METRICS_ENABLED:  # `METRICS_ENABLED=false`: the hooks count nothing (`make bench` compares)

    def _not_counted(*args, **kwargs) -> None:
        return None

    answer_started = first_chunk = answer_ended = _not_counted
    reader_opened = reader_closed = quota_refused = http_error = _not_counted


# --- The pool's stats ------------------------------------------------------------------------------
_published: dict[str, float] = {}
_publish_lock = threading.Lock()


def publish_pool_stats() -> None:
    """This process's pool stats into its metrics files: gauges as they are, counters by their growth."""
    connection = connections["default"]
    pool = getattr(connection, "pool", None)  # PostgreSQL with Django's pool only
    if pool is None:
        return
    try:
        stats = pool.get_stats()
    except RuntimeError:  # its counters changed while being copied: the next publication has them
        return
    with _publish_lock:
        for key, gauge in POOL_GAUGES.items():
            gauge.set(stats.get(key, 0))
        for key, (counter, scale) in POOL_COUNTERS.items():
            value = stats.get(key, 0)
            previous = _published.get(key, 0)
            growth = value - previous if value >= previous else value  # a new pool counts from zero
            if growth:
                counter.inc(growth * scale)
            _published[key] = value


def _publish_pool_stats_or_warn() -> None:
    try:
        publish_pool_stats()
    except Exception:  # the metrics must never stop the server, nor a scrape
        logger.warning("database pool stats not published", exc_info=True)


def start_pool_stats_publisher() -> None:
    """Publish now, then every POOL_STATS_INTERVAL in a daemon thread (a server process calls it once)."""

    def publish_forever() -> None:
        while True:
            time.sleep(POOL_STATS_INTERVAL)
            _publish_pool_stats_or_warn()

    _publish_pool_stats_or_warn()
    threading.Thread(target=publish_forever, name="metrics: pool stats", daemon=True).start()


def exposition() -> tuple[bytes, str]:
    """Every process's metrics, summed, in Prometheus' text format: (body, content type)."""
    sweep_dead_processes()
    _publish_pool_stats_or_warn()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=METRICS_DIR)
    return generate_latest(registry), CONTENT_TYPE_LATEST
