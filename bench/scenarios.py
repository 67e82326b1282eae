"""The scenarios, each run against one live server by the load generator in its own pinned process.

- L (light load): 10 in flight, time to first chunk (the mock's first chunk comes without delay);
- T (throughput): 20-chunk streams with no delay, 50 in flight; streams/s and server CPU ms per stream;
- C1000 (burst): 1,000 streams at once, 50 chunks 100 ms apart; the server's RSS and the database's
  connections sampled while it runs.
"""

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from bench.database import ConnectionCounter
from bench.servers import CLIENT_CORE, Server, pinned


@dataclass(frozen=True)
class Scale:
    """How much each scenario sends (environment variables override, for a quick or a longer run)."""

    rounds: int = 3
    warmup: int = 100
    throughput: int = 2000
    throughput_seconds: int = 10  # T stops starting streams after this: a slow app must not stall the bench
    light: int = 120
    burst: int = 1000

    @classmethod
    def from_env(cls, *, quick: bool = False) -> "Scale":
        base = cls(rounds=1, warmup=50, throughput=400, throughput_seconds=5, light=60) if quick else cls()
        return cls(
            **{name: int(os.environ.get(f"BENCH_{name.upper()}", getattr(base, name))) for name in vars(base)}
        )


def run_client(server: Server, token: str, **job) -> dict:
    """One job of the load generator (see `bench.client`), pinned to the client's core."""
    job = {"port": server.port, "token": token, "burst": False, "timeout": 300, **job}
    command = pinned(CLIENT_CORE, [sys.executable, "-m", "bench.client", json.dumps(job)])
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout)


def warm_up(server: Server, token: str, scale: Scale) -> None:
    run_client(server, token, streams=scale.warmup, concurrency=50, chunks=20, delay_ms=0)


def light(server: Server, token: str, scale: Scale) -> dict:
    """10 in flight, out of step, of 10 chunks 50 ms apart: about 20 starts a second, one at a time."""
    result = run_client(
        server, token, streams=scale.light, concurrency=10, chunks=10, delay_ms=50, spread_ms=450
    )
    return {
        "l_ttfc_p50": result["first_chunk_p50_ms"],
        "l_ttfc_p99": result["first_chunk_p99_ms"],
        "l_failures": sum(result["failures"].values()),
    }


def throughput(server: Server, token: str, scale: Scale) -> dict:
    cpu_before = server.cpu_seconds()
    result = run_client(
        server,
        token,
        streams=scale.throughput,
        max_seconds=scale.throughput_seconds,
        concurrency=50,
        chunks=20,
        delay_ms=0,
    )
    cpu = server.cpu_seconds() - cpu_before
    return {
        "t_streams_per_s": result["streams_per_s"],
        "t_cpu_ms": cpu * 1000 / max(1, result["completed"]),
        "t_busy_pct": 100 * cpu / result["wall_s"],
        "t_streams": result["completed"],
        "t_failures": sum(result["failures"].values()),
        "t_client_cpu_pct": 100 * result["client_cpu_s"] / result["wall_s"],
    }


class PeakSampler:
    """Samples the server's RSS (every 50 ms) and the database's connections (every 100 ms) on a thread."""

    def __init__(self, server: Server, *, count_connections: bool) -> None:
        self.server = server
        self.counter = ConnectionCounter() if count_connections else None
        self.peak_rss_kb = server.rss_kb()
        self.peak_connections = 0
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
            if self.counter and tick % 2 == 0:
                self.peak_connections = max(self.peak_connections, self.counter.count())
            tick += 1


def burst(server: Server, token: str, scale: Scale) -> dict:
    idle_rss_kb = server.rss_kb()
    with PeakSampler(server, count_connections=server.app == "chatsvc") as sampler:
        result = run_client(
            server, token, streams=scale.burst, chunks=50, delay_ms=100, burst=True, timeout=120
        )
    return {
        "c_completed": result["completed"],
        "c_failures": sum(result["failures"].values()),
        "c_failure_reasons": result["failures"],
        "c_first_p50": result["first_chunk_p50_ms"],
        "c_first_p99": result["first_chunk_p99_ms"],
        "c_gap_p99": result["gap_p99_ms"],
        "c_rss_idle_mb": idle_rss_kb / 1024,
        "c_rss_peak_mb": sampler.peak_rss_kb / 1024,
        "c_rss_per_stream_kb": (sampler.peak_rss_kb - idle_rss_kb) / scale.burst,
        "c_pg_peak": sampler.peak_connections,
        "c_open_peak": result["open_peak"],
        "c_client_cpu_pct": 100 * result["client_cpu_s"] / result["wall_s"],
        "c_server_alive": server.alive(),
    }


def session(server: Server, token: str, scale: Scale) -> dict:
    """Every scenario against one fresh server: warm-up, L, T, then the burst."""
    started = time.monotonic()
    warm_up(server, token, scale)
    figures = {}
    for scenario in (light, throughput, burst):
        figures.update(scenario(server, token, scale))
    figures["session_s"] = time.monotonic() - started
    return figures
