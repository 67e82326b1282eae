"""The scenarios, each in one function here, run by the load generators in their own pinned process.

Against one warmed server (`session`):
- L (light load): 10 in flight, time to first chunk (the mock's first chunk comes without delay);
- T (throughput): 20-chunk streams with no delay, 50 in flight; streams/s and server CPU ms per stream;
  chatsvc also as the AI SDK's UI message stream (`POST /api/ai/chat`), "T UI";
- C1000 (burst): 1,000 streams at once, 50 chunks 100 ms apart; the server's RSS and the database's
  connections sampled while it runs.
Each on a server of its own:
- C1000 cold (`cold_burst`): the same burst against a server started a second before, no warm-up;
- T with metrics off (`metrics_off_throughput`, chatsvc): T on a server with `METRICS_ENABLED=false`;
- R (`readers`, chatsvc): answers each read by their POST on the owner process and by 4 readers on a
  second process through Redis (`bench.readers`): chunks delivered per second, the remote readers' lag
  behind the local one, every reader's ids and data checked.
"""

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.apps import App
from bench.servers import CLIENT_CORE, Server, pinned

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")  # a database of R's own
COLD_WAIT = 1.0  # seconds between the server's first answer and the cold burst
READ_JOB = {"remote_readers": 4, "chunks": 100, "delay_ms": 100, "spread_ms": 2000}  # R's answers


@dataclass(frozen=True)
class Scale:
    """How much each scenario sends (environment variables override, for a quick or a longer run)."""

    rounds: int = 3
    warmup: int = 100
    throughput: int = 2000
    throughput_seconds: int = 10  # T stops starting streams after this: a slow app must not stall the bench
    light: int = 120
    burst: int = 1000
    reads: int = 200  # R's answers, each read by 5 readers

    @classmethod
    def from_env(cls, *, quick: bool = False) -> "Scale":
        base = cls(rounds=1, warmup=50, throughput=400, throughput_seconds=5, light=60) if quick else cls()
        return cls(
            **{name: int(os.environ.get(f"BENCH_{name.upper()}", getattr(base, name))) for name in vars(base)}
        )


def _load(module: str, job: dict) -> dict:
    """One job of a load generator (`bench.client`, `bench.readers`), pinned to the client's core."""
    command = pinned(CLIENT_CORE, [sys.executable, "-m", module, json.dumps(job)])
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout)


def run_client(server: Server, **job) -> dict:
    """One job of `bench.client` against `server`, as its app's bench user."""
    return _load(
        "bench.client",
        {"port": server.port, "token": server.app.token, "burst": False, "timeout": 300, **job},
    )


def warm_up(server: Server, scale: Scale) -> None:
    run_client(server, streams=scale.warmup, concurrency=50, chunks=20, delay_ms=0)


def light(server: Server, scale: Scale) -> dict:
    """10 in flight, out of step, of 10 chunks 50 ms apart: about 20 starts a second, one at a time."""
    result = run_client(server, streams=scale.light, concurrency=10, chunks=10, delay_ms=50, spread_ms=450)
    return {
        "l_ttfc_p50": result["first_chunk_p50_ms"],
        "l_ttfc_p99": result["first_chunk_p99_ms"],
        "l_failures": sum(result["failures"].values()),
    }


def _throughput(server: Server, scale: Scale, *, encoding: str, prefix: str) -> dict:
    cpu_before = server.cpu_seconds()
    result = run_client(
        server,
        streams=scale.throughput,
        max_seconds=scale.throughput_seconds,
        concurrency=50,
        chunks=20,
        delay_ms=0,
        encoding=encoding,
    )
    cpu = server.cpu_seconds() - cpu_before
    figures = {
        "streams_per_s": result["streams_per_s"],
        "cpu_ms": cpu * 1000 / result["completed"] if result["completed"] else None,
        "busy_pct": 100 * cpu / result["wall_s"],
        "streams": result["completed"],
        "failures": sum(result["failures"].values()),
        "client_cpu_pct": 100 * result["client_cpu_s"] / result["wall_s"],
    }
    return {f"{prefix}_{key}": value for key, value in figures.items()}


def throughput(server: Server, scale: Scale) -> dict:
    return _throughput(server, scale, encoding="sse", prefix="t")


def ui_throughput(server: Server, scale: Scale) -> dict:
    """T in the AI SDK's encoding: `POST /api/ai/chat`, the UI message stream (a new chat each time)."""
    return _throughput(server, scale, encoding="ui", prefix="tui")


class PeakSampler:
    """Samples the server's RSS (every 50 ms) and its database's connections (every 100 ms) on a thread."""

    def __init__(self, server: Server) -> None:
        self.server = server
        database = server.app.database
        self.counter = database.connection_counter() if database else None
        self.peak_rss_kb = server.rss_kb()
        self.peak_connections: int | None = None  # None: not one sample could be taken
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "PeakSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join()
        if self.counter:
            self.counter.close()

    def _sample(self) -> None:
        tick = 0
        while not self.stopped.wait(0.05):
            if not self.server.alive():
                return
            self.peak_rss_kb = max(self.peak_rss_kb, self.server.rss_kb())
            if self.counter and tick % 2 == 0 and (count := self.counter.count()) is not None:
                self.peak_connections = max(self.peak_connections or 0, count)
            tick += 1


def _burst(server: Server, scale: Scale, *, prefix: str) -> dict:
    idle_rss_kb = server.rss_kb()
    with PeakSampler(server) as sampler:
        result = run_client(server, streams=scale.burst, chunks=50, delay_ms=100, burst=True, timeout=120)
    figures = {
        "completed": result["completed"],
        "failures": sum(result["failures"].values()),
        "failure_reasons": result["failures"],
        "first_p50": result["first_chunk_p50_ms"],
        "first_p99": result["first_chunk_p99_ms"],
        "gap_p99": result["gap_p99_ms"],
        "rss_idle_mb": idle_rss_kb / 1024,
        "rss_peak_mb": sampler.peak_rss_kb / 1024,
        "rss_per_stream_kb": (sampler.peak_rss_kb - idle_rss_kb) / scale.burst,
        "pg_peak": sampler.peak_connections,
        "open_peak": result["open_peak"],
        "client_cpu_pct": 100 * result["client_cpu_s"] / result["wall_s"],
        "server_alive": server.alive(),
    }
    return {f"{prefix}_{key}": value for key, value in figures.items()}


def burst(server: Server, scale: Scale) -> dict:
    return _burst(server, scale, prefix="c")


def session(server: Server, scale: Scale) -> dict:
    """The scenarios of a warmed server: warm-up, L, T (and T UI for today's chatsvc), then the burst."""
    started = time.monotonic()
    warm_up(server, scale)
    scenarios = [light, throughput, *([ui_throughput] if server.app.name == "chatsvc" else []), burst]
    figures = {}
    for scenario in scenarios:
        figures.update(scenario(server, scale))
    figures["session_s"] = time.monotonic() - started
    figures["server_errors"] = server.errors()
    return figures


def cold_burst(server_name: str, app: App, scale: Scale, *, log_path: Path) -> dict:
    """C1000 against a server that answered its first request (`/healthz`) a second ago."""
    with Server(server_name, app, log_path=log_path) as server:
        time.sleep(COLD_WAIT)
        figures = _burst(server, scale, prefix="cold")
        figures["cold_server_errors"] = server.errors()
    return figures


def metrics_off_throughput(server_name: str, app: App, scale: Scale, *, log_path: Path) -> dict:
    """T on a chatsvc server with `METRICS_ENABLED=false`: beside T, what counting the metrics costs."""
    with Server(server_name, app.with_env(METRICS_ENABLED="false"), log_path=log_path) as server:
        warm_up(server, scale)
        figures = _throughput(server, scale, encoding="sse", prefix="t_nometrics")
        figures["t_nometrics_server_errors"] = server.errors()
    return figures


def readers(app: App, scale: Scale, *, log_dir: Path, label: str) -> dict:
    """R on daphne: the owner process and a second one, on one Redis database flushed first."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    app = app.with_env(REDIS_URL=REDIS_URL)
    with (
        Server("daphne", app, log_path=log_dir / f"{label}-owner.log") as owner,
        Server("daphne", app, log_path=log_dir / f"{label}-reader.log") as other,
    ):
        warm_up(owner, scale)
        job = {"owner_port": owner.port, "reader_port": other.port, "token": app.token, "timeout": 120}
        warming = {**job, **READ_JOB, "answers": 20, "chunks": 10}  # the reader process's warm-up
        _load("bench.readers", warming)
        cpu_before = owner.cpu_seconds() + other.cpu_seconds()
        with PeakSampler(owner) as sampler:  # the database's connections: both processes'
            result = _load("bench.readers", {**job, **READ_JOB, "answers": scale.reads})
        cpu = owner.cpu_seconds() + other.cpu_seconds() - cpu_before
        errors = {**owner.errors(), **other.errors()}
    return {
        "r_chunks_per_s": result["chunks_per_s"],
        "r_lag_p50": result["lag_p50_ms"],
        "r_lag_p99": result["lag_p99_ms"],
        "r_lag_max": result["lag_max_ms"],
        "r_steady_s": result["steady_s"],
        "r_steady_lag_p50": result["steady_lag_p50_ms"],
        "r_steady_lag_p99": result["steady_lag_p99_ms"],
        "r_steady_lag_samples": result["steady_lag_samples"],
        "r_attach_p50": result["attach_p50_ms"],
        "r_attach_p99": result["attach_p99_ms"],
        "r_lag_samples": result["lag_samples"],
        "r_readers": result["readers"],
        "r_chunks": result["chunks_delivered"],
        "r_busy_pct": 100 * cpu / result["wall_s"],
        "r_pg_peak": sampler.peak_connections,
        "r_violations": result["violations"],
        "r_violation_examples": result["violation_examples"],
        "r_readers_failed": result["readers_failed"],
        "r_client_cpu_pct": 100 * result["client_cpu_s"] / result["wall_s"],
        "r_server_errors": errors,
    }
