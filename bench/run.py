"""`make bench`: every scenario on daphne and uvicorn, for chatsvc, a baseline and the bare view, in rounds.

    python -m bench [--quick] [--profile] [--servers daphne,uvicorn] [--baseline <git ref>]

Re-creates the bench databases, counts the SQL of one stream, runs the rounds (each app on a fresh
server: warm-up, L, T, C1000; then C1000 cold on another; then, for daphne/chatsvc, T with metrics off
and R), measures the cost
of INFO logging once, optionally profiles the server with py-spy, then prints one markdown table and
writes it to bench/results/latest.md. `--baseline <ref>` adds that commit's chatsvc, built in a
temporary git worktree, as a third app of the same rounds. Counts come from `Scale` (BENCH_ROUNDS,
BENCH_WARMUP, BENCH_THROUGHPUT, BENCH_THROUGHPUT_SECONDS, BENCH_LIGHT, BENCH_BURST, BENCH_READS; 0 reads
skips R).
"""

import argparse
import fcntl
import json
import os
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench import apps, database, profile, report, scenarios, sqlcount
from bench.apps import App
from bench.servers import CLIENT_CORE, PINNING, Server

RESULTS = Path(__file__).resolve().parent / "results"
LOGS = RESULTS / "logs"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def count_sql(app: App, streams: int = 10) -> dict:
    """Statements PostgreSQL receives per stream of `app`, streams sent one at a time after a warm-up."""
    with sqlcount.CountingProxy(*database.server_address()) as proxy:
        proxied = app.with_env(DATABASE_URL=app.database.url(via_port=proxy.port))
        with Server("daphne", proxied, log_path=LOGS / f"sql-count-{app.name}.log") as server:
            job = {"concurrency": 1, "chunks": 20, "delay_ms": 0}
            scenarios.run_client(server, streams=3, **job)
            proxy.log.reset()
            result = scenarios.run_client(server, streams=streams, **job)
            statements, round_trips, connections = proxy.log.reset()
    if result["completed"] != streams:
        raise RuntimeError(
            f"SQL count ({app.name}): only {result['completed']} of {streams} streams completed"
        )
    summary = sqlcount.summarise(statements, round_trips, streams)
    summary["connections"] = connections
    summary["one_stream"] = statements[: round(summary["per_stream"])]
    return summary


def warm_session(name: str, app: App, scale: scenarios.Scale, tag: str) -> dict:
    with Server(name, app, log_path=LOGS / f"{tag}.log") as server:
        return scenarios.session(server, scale)


def one_app(name: str, app: App, scale: scenarios.Scale, tag: str) -> dict:
    """One round of one app on one server: the warm session, the cold burst (and, daphne/chatsvc: T with
    metrics off, R).

    A step that fails (PostgreSQL out of connections on a shared machine …) is listed in `errors`; the
    round's other figures are kept."""
    steps = {
        "warm session": lambda: warm_session(name, app, scale, tag),
        "C1000 cold": lambda: scenarios.cold_burst(name, app, scale, log_path=LOGS / f"{tag}-cold.log"),
    }
    if name == "daphne" and app.name == "chatsvc":
        log_path = LOGS / f"{tag}-nometrics.log"
        steps["T, metrics off"] = lambda: scenarios.metrics_off_throughput(
            name, app, scale, log_path=log_path
        )
        if scale.reads:
            steps["R"] = lambda: scenarios.readers(app, scale, log_dir=LOGS, label=f"{tag}-r")
    figures, errors = {}, []
    for step, measure in steps.items():
        try:
            figures.update(measure())
        except Exception as error:
            say(traceback.format_exc())
            errors.append(f"{step}: {type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}")
    if errors:
        figures["errors"] = errors
    return figures


def rounds(
    served: list[App], scale: scenarios.Scale, server_names: list[str]
) -> dict[tuple[str, str], list[dict]]:
    """Every (server, app) once per round; the app order rotates so none always goes first."""
    results = {(name, app.name): [] for name in server_names for app in served}
    for number in range(scale.rounds):
        for index, name in enumerate(server_names):
            shift = (number + index) % len(served)
            for app in served[shift:] + served[:shift]:
                figures = one_app(name, app, scale, tag=f"{name}-{app.name}-round{number + 1}")
                results[(name, app.name)].append(figures)
                say(f"round {number + 1} {name:7} {app.name:8}: {report.round_line(figures)}")
    return results


def logging_cost(app: App, scale: scenarios.Scale, results: dict) -> str:
    """T once more on daphne/chatsvc with LOG_LEVEL=INFO (one `ai.stream` line per stream)."""
    with Server(
        "daphne", app.with_env(LOG_LEVEL="INFO"), log_path=LOGS / "daphne-chatsvc-info.log"
    ) as server:
        scenarios.warm_up(server, scale)
        info = scenarios.throughput(server, scale)
    warning = results[("daphne", "chatsvc")]
    rate, cpu = report.combine(warning, "t_streams_per_s"), report.combine(warning, "t_cpu_ms")
    return (
        f"INFO logging (one line per stream), daphne/chatsvc T, one run: "
        f"{report.cell(info['t_streams_per_s'], 0)} streams/s and {report.cell(info['t_cpu_ms'], 2)} CPU "
        f"ms/stream, against {report.cell(rate, 0)} and {report.cell(cpu, 2)} at WARNING (median): "
        f"{report.cell(report.minus(info['t_cpu_ms'], cpu), 2)} ms/stream (within the noise unless well "
        "over ±10 %)."
    )


def profiled(app: App, scale: scenarios.Scale) -> str:
    if not profile.py_spy():
        return "Profile: py-spy is not installed (`pip install py-spy`)."
    raw = RESULTS / "profile-daphne-chatsvc.txt"
    with Server("daphne", app, log_path=LOGS / "profile.log") as server:
        scenarios.warm_up(server, scale)
        figures = profile.record(server, scale, raw)
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
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also serve this git ref's chatsvc (a temporary worktree) in every round",
    )
    return parser.parse_args()


@contextmanager
def one_run_at_a_time():
    """Two runs would drop each other's databases and flush each other's Redis: a second one waits."""
    path = Path(tempfile.gettempdir()) / f"chatsvc-bench-{database.NAME}.lock"
    with open(path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another make bench is running (it holds {path}): waiting for it to end")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main() -> None:
    args = parse_args()
    with one_run_at_a_time():
        run(args)


def run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    if PINNING:
        os.sched_setaffinity(0, {CLIENT_CORE})  # this process and its helpers stay off the server's core
    LOGS.mkdir(parents=True, exist_ok=True)
    scale = scenarios.Scale.from_env(quick=args.quick)
    server_names = args.servers.split(",")
    machine = report.machine()
    say(f"machine: {machine}\nscale: {scale}")

    with ExitStack() as stack:
        chatsvc = apps.chatsvc()
        served = [chatsvc]
        if args.baseline:
            say(f"baseline: {apps.describe(args.baseline)}, in a temporary worktree")
            served.append(stack.enter_context(apps.baseline(args.baseline)))
        served.append(apps.bare())
        sql = {app.name: count_sql(app) for app in served if app.database}
        say(
            "SQL statements per stream: "
            + ", ".join(
                f"{name} {s['per_stream']:g} ({s['round_trips_per_stream']:g} round trips)"
                for name, s in sql.items()
            )
        )
        results = rounds(served, scale, server_names)
    notes = []
    if not args.no_logging_cost and "daphne" in server_names:
        notes.append(logging_cost(chatsvc, scale, results))
    if args.profile:
        notes.append(profiled(chatsvc, scale))

    names = [app.name for app in served]
    baseline = f"; baseline: {apps.describe(args.baseline)}" if args.baseline else ""
    text = "\n\n".join(
        [
            f"# make bench ({time.strftime('%Y-%m-%d %H:%M')}, {scale.rounds} rounds, "
            f"{time.monotonic() - started:.0f} s)",
            f"Command: `python -m bench {' '.join(sys.argv[1:])}`; scale: {scale}{baseline}",
            f"Machine: {machine}",
            report.table(results, server_names, names, sql),
            report.readers_section(results),
            "Problems: " + ("; ".join(report.problems(results)) or "none: no failed stream, no server died."),
            f"Load average at the end: {os.getloadavg()[0]:.2f}. Streams/s needs the server's core to "
            "itself; where 'busy' is well under 100 % other processes shared it, and CPU ms / stream is "
            "the steadier figure.",
            *notes,
            "Rounds:\n\n" + report.rounds_table(results),
            *(report.sql_section(name, counted) for name, counted in sql.items()),
        ]
    )
    print(text)
    (RESULTS / "latest.md").write_text(text + "\n")
    raw = {
        "scale": vars(scale),
        "sql": sql,
        "results": {f"{name}/{app}": figures for (name, app), figures in results.items()},
    }
    (RESULTS / "latest.json").write_text(json.dumps(raw, indent=1))
    failed = [
        f"{name}/{app}" for (name, app), rounds in results.items() if any("errors" in f for f in rounds)
    ]
    if failed:
        say(f"Some rounds could not be measured ({', '.join(failed)}): see Problems.")
    if violations := report.reader_violations(results):
        say("R FAILED: a reader saw a gap, a duplicate or other data than the local reader:\n" + violations)
    if failed or violations:
        sys.exit(1)
