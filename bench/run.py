"""`make bench`: every scenario on daphne and uvicorn, chatsvc and the bare baseline, in interleaved rounds.

    python -m bench [--quick] [--profile] [--servers daphne,uvicorn]

Re-creates the `chatsvc_bench` database, counts the SQL of one stream, runs the rounds (each a fresh
server per app: warm-up, L, T, C1000), measures the cost of INFO logging once, optionally profiles the
server with py-spy, then prints one markdown table and writes it to bench/results/latest.md.
Counts come from `Scale` (BENCH_ROUNDS, BENCH_WARMUP, BENCH_THROUGHPUT, BENCH_THROUGHPUT_SECONDS,
BENCH_LIGHT, BENCH_BURST).
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench import database, profile, report, scenarios, sqlcount
from bench.servers import CLIENT_CORE, PINNING, Server, chatsvc_env

RESULTS = Path(__file__).resolve().parent / "results"
LOGS = RESULTS / "logs"
APPS = ("chatsvc", "bare")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def server_env(app: str, **options) -> dict[str, str]:
    return chatsvc_env(database.url(), **options) if app == "chatsvc" else {}


def count_sql(token: str, streams: int = 10) -> dict:
    """Statements PostgreSQL receives per stream, streams sent one at a time after a warm-up."""
    with sqlcount.CountingProxy(*database.server_address()) as proxy:
        env = chatsvc_env(database.url(via_port=proxy.port))
        with Server("daphne", "chatsvc", env=env, log_path=LOGS / "sql-count.log") as server:
            job = {"concurrency": 1, "chunks": 20, "delay_ms": 0}
            scenarios.run_client(server, token, streams=3, **job)
            proxy.log.reset()
            result = scenarios.run_client(server, token, streams=streams, **job)
            statements, connections = proxy.log.reset()
    if result["completed"] != streams:
        raise RuntimeError(f"SQL count: only {result['completed']} of {streams} streams completed")
    summary = sqlcount.summarise(statements, streams)
    summary["connections"] = connections
    summary["one_stream"] = statements[: round(summary["per_stream"])]
    return summary


def rounds(token: str, scale: scenarios.Scale, server_names: list[str]) -> dict[tuple[str, str], list[dict]]:
    """Every (server, app) once per round; the app order alternates so neither always goes first."""
    results = {(name, app): [] for name in server_names for app in APPS}
    for number in range(scale.rounds):
        for index, name in enumerate(server_names):
            order = APPS if (number + index) % 2 == 0 else APPS[::-1]
            for app in order:
                log_path = LOGS / f"{name}-{app}-round{number + 1}.log"
                with Server(name, app, env=server_env(app), log_path=log_path) as server:
                    figures = scenarios.session(server, token, scale)
                    figures["server_errors"] = server.errors()
                results[(name, app)].append(figures)
                say(
                    f"round {number + 1} {name:7} {app:7}: T {figures['t_streams_per_s']:.0f} streams/s, "
                    f"{figures['t_cpu_ms']:.2f} CPU ms; L p50 {figures['l_ttfc_p50']:.1f} ms; C1000 "
                    f"{figures['c_completed']} done, p99 first {figures['c_first_p99']:.0f} ms "
                    f"({figures['session_s']:.0f} s)"
                )
    return results


def logging_cost(token: str, scale: scenarios.Scale, results: dict) -> str:
    """T once more on daphne/chatsvc with LOG_LEVEL=INFO (one `ai.stream` line per stream)."""
    env = server_env("chatsvc", log_level="INFO")
    with Server("daphne", "chatsvc", env=env, log_path=LOGS / "daphne-chatsvc-info.log") as server:
        scenarios.warm_up(server, token, scale)
        info = scenarios.throughput(server, token, scale)
    warning = results[("daphne", "chatsvc")]
    rate = statistics.median(f["t_streams_per_s"] for f in warning)
    cpu = statistics.median(f["t_cpu_ms"] for f in warning)
    return (
        f"INFO logging (one line per stream), daphne/chatsvc T, one run: "
        f"{info['t_streams_per_s']:.0f} streams/s and {info['t_cpu_ms']:.2f} CPU ms/stream, "
        f"against {rate:.0f} and {cpu:.2f} at WARNING (median): "
        f"{info['t_cpu_ms'] - cpu:+.2f} ms/stream (within the noise unless well over ±10 %)."
    )


def profiled(token: str, scale: scenarios.Scale) -> str:
    if not profile.py_spy():
        return "Profile: py-spy is not installed (`pip install py-spy`)."
    raw = RESULTS / "profile-daphne-chatsvc.txt"
    with Server("daphne", "chatsvc", env=server_env("chatsvc"), log_path=LOGS / "profile.log") as server:
        scenarios.warm_up(server, token, scale)
        figures = profile.record(server, token, scale, raw)
    return (
        f"Profile (py-spy, daphne/chatsvc under T; {figures['t_streams_per_s']:.0f} streams/s while sampled; "
        f"raw stacks in {raw.relative_to(RESULTS.parent.parent)}):\n\n{profile.summarise(raw)}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, small counts (a smoke run)")
    parser.add_argument("--profile", action="store_true", help="also profile chatsvc under T with py-spy")
    parser.add_argument("--servers", default="daphne,uvicorn", help="comma-separated: daphne,uvicorn")
    parser.add_argument("--no-logging-cost", action="store_true", help="skip the INFO logging run")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    if PINNING:
        os.sched_setaffinity(0, {CLIENT_CORE})  # this process and its helpers stay off the server's core
    LOGS.mkdir(parents=True, exist_ok=True)
    scale = scenarios.Scale.from_env(quick=args.quick)
    server_names = args.servers.split(",")
    machine = report.machine()
    say(f"machine: {machine}\nscale: {scale}")

    database.recreate()
    token = database.migrate_and_seed({**os.environ, **chatsvc_env(database.url())})
    sql = count_sql(token)
    say(f"SQL statements per stream: {sql['per_stream']:g}")
    results = rounds(token, scale, server_names)
    notes = []
    if not args.no_logging_cost and "daphne" in server_names:
        notes.append(logging_cost(token, scale, results))
    if args.profile:
        notes.append(profiled(token, scale))

    text = "\n\n".join(
        [
            f"# make bench ({time.strftime('%Y-%m-%d %H:%M')}, {scale.rounds} rounds, "
            f"{time.monotonic() - started:.0f} s)",
            f"Machine: {machine}",
            report.table(results, server_names, sql),
            "Problems: " + ("; ".join(report.problems(results)) or "none: no failed stream, no server died."),
            f"Load average at the end: {os.getloadavg()[0]:.2f}. Streams/s needs the server's core to "
            "itself; where 'busy' is well under 100 % other processes shared it, and CPU ms / stream is "
            "the steadier figure.",
            *notes,
            "Rounds:\n\n" + report.rounds_table(results),
            report.sql_section(sql),
        ]
    )
    print(text)
    (RESULTS / "latest.md").write_text(text + "\n")
    raw = {"scale": vars(scale), "sql": sql, "results": {f"{k[0]}/{k[1]}": v for k, v in results.items()}}
    (RESULTS / "latest.json").write_text(json.dumps(raw, indent=1))
