"""The bench's tables: medians over rounds per server and app, ratios to bare and baseline, the targets."""

import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

import django

from bench import scenarios, servers, sqlcount


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    digits: int
    target: str = ""
    ratio: bool = True


FIGURES = [
    Figure("t_streams_per_s", "T: streams/s (20 chunks, 50 in flight)", 0, "≥ 2 × baseline (#16)"),
    Figure("t_streams", "T: streams measured (median per round)", 0, "", ratio=False),
    Figure("t_cpu_ms", "T: server CPU ms / stream", 2, "≤ 0.5 × baseline (#16), ≤ 1.1 × (#12)"),
    Figure("t_busy_pct", "T: server CPU busy, % of its core", 0, "", ratio=False),
    Figure("tui_streams_per_s", "T UI (AI SDK stream, POST /api/ai/chat): streams/s", 0),
    Figure("tui_cpu_ms", "T UI: server CPU ms / stream", 2),
    Figure("t_nometrics_streams_per_s", "T, metrics off (METRICS_ENABLED=false): streams/s", 0),
    Figure("t_nometrics_cpu_ms", "T, metrics off: server CPU ms / stream", 2),
    Figure("l_ttfc_p50", "L: time to first chunk p50, ms (10 in flight)", 1),
    Figure("l_ttfc_p99", "L: time to first chunk p99, ms", 1),
    Figure("c_completed", "C1000: completed (median)", 0, "1000, 0 failures", ratio=False),
    Figure("c_failures", "C1000: failed streams (all rounds)", 0, "0", ratio=False),
    Figure("c_first_p50", "C1000: first chunk p50, ms", 0),
    Figure("c_first_p99", "C1000: first chunk p99, ms", 0, "≤ 3 × bare (#16)"),
    Figure("c_gap_p99", "C1000: inter-chunk gap p99, ms (nominal 100)", 0, "≤ 2 × bare"),
    Figure("c_rss_idle_mb", "C1000: server RSS before, MB", 1),
    Figure("c_rss_peak_mb", "C1000: server RSS peak, MB", 1),
    Figure("c_open_peak", "C1000: most streams open at once (client's view)", 0, "", ratio=False),
    Figure("c_rss_per_stream_kb", "C1000: RSS per open stream, KB", 1, "≤ 100 KB"),
    Figure("c_pg_peak", "C1000: peak PostgreSQL connections", 0, "≤ 20", ratio=False),
    Figure("cold_completed", "C1000 cold: completed (median)", 0, "1000, 0 failures (#15)", ratio=False),
    Figure("cold_failures", "C1000 cold: failed streams (all rounds)", 0, "0", ratio=False),
    Figure("cold_first_p50", "C1000 cold: first chunk p50, ms", 0),
    Figure("cold_first_p99", "C1000 cold: first chunk p99, ms", 0),
    Figure("cold_pg_peak", "C1000 cold: peak PostgreSQL connections", 0, "≤ 20", ratio=False),
]
SUMMED = {"c_failures", "cold_failures"}  # failures are added over the rounds; every other figure is a median
SERVER_LOGS = {  # where a round's servers' logged exceptions are kept
    "server_errors": "warm session",
    "cold_server_errors": "C1000 cold",
    "t_nometrics_server_errors": "T, metrics off",
    "r_server_errors": "R",
}
FAILURES = {
    "l_failures": "L",
    "t_failures": "T",
    "tui_failures": "T UI",
    "t_nometrics_failures": "T, metrics off",
}
RATIOS = {"bare": "÷ bare", "baseline": "÷ baseline"}  # chatsvc's figure over theirs, when they are served


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = models[0] if models else "?"
    versions = {name: _version(name) for name in ("daphne", "uvicorn", "psycopg")}
    psql = subprocess.run(["psql", "--version"], capture_output=True, text=True, check=False)
    postgres = psql.stdout.strip()
    pinning = "servers on core 0, clients on core 1 (taskset)" if servers.PINNING else "UNPINNED (no taskset)"
    return (
        f"{os.cpu_count()} CPUs ({cpu}); Python {platform.python_version()}, Django {django.get_version()}, "
        f"daphne {versions['daphne']}, uvicorn {versions['uvicorn']} (--loop {servers.UVICORN_LOOP}, "
        f"--http {servers.UVICORN_HTTP}), psycopg {versions['psycopg']}, {postgres or 'PostgreSQL ?'}; "
        f"{pinning}; load average at start {os.getloadavg()[0]:.2f}"
    )


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"


def combine(rounds: list[dict], key: str) -> float | None:
    values = [figures[key] for figures in rounds if figures.get(key) is not None]
    if not values:
        return None
    return sum(values) if key in SUMMED else statistics.median(values)


def cell(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def ratio(chatsvc: float | None, other: float | None) -> str:
    return "–" if not chatsvc or not other else f"{chatsvc / other:.2f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(results: dict, server_names: list[str], apps: list[str], sql: dict) -> str:
    """One row per figure; per server a column per app, then chatsvc's ratio to bare (and baseline)."""
    compared = [name for name in RATIOS if name in apps]
    header = ["figure (median of rounds)"]
    for server in server_names:
        header += [f"{server} {app}" for app in apps] + [f"{server} {RATIOS[name]}" for name in compared]
    lines = [_row([*header, "target"]), "|" + "---|" * (len(header) + 1)]
    for figure in FIGURES:
        row = [figure.label]
        for server in server_names:
            values = {app: combine(results[(server, app)], figure.key) for app in apps}
            row += [cell(values[app], figure.digits) for app in apps]
            row += [ratio(values["chatsvc"], values[name]) if figure.ratio else "" for name in compared]
        lines.append(_row([*row, figure.target]))

    lines += _difference_rows(results, server_names, apps, compared)
    sql_row = ["SQL statements / stream (BEGIN/COMMIT included)"]
    for _ in server_names:
        sql_row += [cell(sql[app]["per_stream"], 1) if app in sql else "0" for app in apps]
        sql_row += [""] * len(compared)
    lines.append(_row([*sql_row, "≤ 8"]))
    trips_row = ["SQL round trips / stream"]
    for _ in server_names:
        trips_row += [cell(sql[app]["round_trips_per_stream"], 1) if app in sql else "0" for app in apps]
        trips_row += [""] * len(compared)
    lines.append(_row([*trips_row, ""]))
    return "\n".join(lines)


def minus(minuend: float | None, subtrahend: float | None) -> float | None:
    return None if minuend is None or subtrahend is None else minuend - subtrahend


def _difference_rows(results: dict, server_names, apps, compared) -> list[str]:
    """L's overhead over the bare view, and what the metrics cost (T with them on, minus off)."""

    def median(server: str, app: str, key: str) -> float | None:
        return combine(results[(server, app)], key)

    def over_bare(server: str, app: str) -> float | None:
        bare = median(server, "bare", "l_ttfc_p50")
        return None if app == "bare" else minus(median(server, app, "l_ttfc_p50"), bare)

    def metrics_cost(server: str, app: str) -> float | None:
        return minus(median(server, app, "t_cpu_ms"), median(server, app, "t_nometrics_cpu_ms"))

    differences = [
        ("L: first chunk p50 over bare's, ms", "≤ +3 ms (#16)", over_bare),
        ("T: what the metrics cost, CPU ms / stream (on − off)", "", metrics_cost),
    ]
    rows = []
    for label, target, difference in differences:
        row = [label]
        for server in server_names:
            for app in apps:
                value = difference(server, app)
                row.append("" if value is None else f"{value:+.2f}")
            row += [""] * len(compared)
        rows.append(_row([*row, target]))
    return rows


def readers_section(results: dict) -> str:
    rounds = results.get(("daphne", "chatsvc"), [])
    if not any("r_chunks_per_s" in figures for figures in rounds):
        return "R: not run (daphne not among the servers, or BENCH_READS=0)."
    job = scenarios.READ_JOB
    violations = sum(figures.get("r_violations", 0) for figures in rounds)
    rows = [
        ("chunks delivered / s, all readers", cell(combine(rounds, "r_chunks_per_s"), 0), ""),
        (
            "remote reader's lag behind the local one, steady load, p50 / p99, ms",
            _pair(rounds, "r_steady_lag_p50", "r_steady_lag_p99"),
            "p99 ≤ 50 ms",
        ),
        ("… its steady window, s; its lag samples", _steady_window(rounds), ""),
        (
            "remote reader's lag, every live event (the attach storm included), p50 / p99, ms",
            _pair(rounds, "r_lag_p50", "r_lag_p99"),
            "",
        ),
        ("remote reader's lag, max, ms", cell(combine(rounds, "r_lag_max"), 1), ""),
        (
            "remote reader's wait for its response to begin, p50 / p99, ms",
            f"{cell(combine(rounds, 'r_attach_p50'), 0)} / {cell(combine(rounds, 'r_attach_p99'), 0)}",
            "",
        ),
        ("peak PostgreSQL connections, both processes", cell(combine(rounds, "r_pg_peak"), 0), ""),
        (
            "readers (median per round); lag samples",
            f"{combine(rounds, 'r_readers'):.0f}; {combine(rounds, 'r_lag_samples'):.0f}",
            "",
        ),
        ("both servers' CPU busy, % of their core", cell(combine(rounds, "r_busy_pct"), 0), ""),
        ("problems: a gap, a duplicate, other data, a failed reader (all rounds)", str(violations), "0"),
    ]
    readers = job["remote_readers"]
    title = (
        f"R (daphne, chatsvc): answers each read by {1 + readers} readers, the POST on the owner process "
        f"and {readers} `GET /api/ai/chat/stream/<id>` on a second process through Redis "
        f"({scenarios.REDIS_URL}); "
        f"{job['chunks']} chunks {job['delay_ms']} ms apart, the answers started over "
        f"{job['spread_ms'] / 1000:g} s. Lag: each event a remote reader got live, against the local "
        "reader's receive time of the same id; steady load: the events of the window in which every "
        "answer ran with its readers attached (from the last remote reader's response to the first "
        "answer's end), the load the target is set for — the whole run adds the attach storm, every "
        "answer's POST and its readers' GETs within a few seconds."
    )
    table = ["| R figure (median of rounds) | value | target |", "|---|---|---|", *map(_row, rows)]
    return title + "\n\n" + "\n".join(table)


def _pair(rounds: list[dict], first: str, second: str) -> str:
    return f"{cell(combine(rounds, first), 1)} / {cell(combine(rounds, second), 1)}"


def _steady_window(rounds: list[dict]) -> str:
    seconds, samples = combine(rounds, "r_steady_s"), combine(rounds, "r_steady_lag_samples")
    if seconds is None:
        return "–"
    return f"{seconds:.1f}; {samples:.0f}"


def reader_violations(results: dict) -> str:
    """R's violations, listed (empty when every reader saw exactly the local reader's events)."""
    found = []
    for (server, app), rounds in results.items():
        for index, figures in enumerate(rounds, 1):
            if figures.get("r_violations"):
                examples = "\n  ".join(figures["r_violation_examples"])
                found.append(
                    f"{server}/{app} round {index}: {figures['r_violations']} problems, e.g.\n  {examples}"
                )
    return "\n".join(found)


ROUND_COLUMNS = [  # (label, key, digits): a round's figures in the progress log and the rounds' table
    ("T streams/s", "t_streams_per_s", 0),
    ("T CPU ms", "t_cpu_ms", 2),
    ("T UI streams/s", "tui_streams_per_s", 0),
    ("T metrics off CPU ms", "t_nometrics_cpu_ms", 2),
    ("L p50 ms", "l_ttfc_p50", 1),
    ("C1000 done", "c_completed", 0),
    ("C1000 failed", "c_failures", 0),
    ("C1000 p99 first ms", "c_first_p99", 0),
    ("C1000 peak PG", "c_pg_peak", 0),
    ("cold done", "cold_completed", 0),
    ("cold failed", "cold_failures", 0),
    ("cold p99 first ms", "cold_first_p99", 0),
    ("R chunks/s", "r_chunks_per_s", 0),
    ("R lag p99 ms", "r_lag_p99", 1),
    ("R steady lag p99 ms", "r_steady_lag_p99", 1),
    ("R problems", "r_violations", 0),
]


def round_line(figures: dict) -> str:
    """One round of one app, for the progress log."""
    shown = [
        f"{label} {cell(figures[key], digits)}" for label, key, digits in ROUND_COLUMNS if key in figures
    ]
    return ", ".join(shown + [f"FAILED {error}" for error in figures.get("errors", [])])


def rounds_table(results: dict) -> str:
    """Every round's main figures, to see the spread behind the medians."""
    header = ["server", "app", "round", *(label for label, _, _ in ROUND_COLUMNS)]
    lines = [_row(header), "|" + "---|" * len(header)]
    for (name, app), rounds in results.items():
        for index, f in enumerate(rounds, 1):
            cells = [cell(f.get(key), digits) for _, key, digits in ROUND_COLUMNS]
            lines.append(_row([name, app, str(index), *cells]))
    return "\n".join(lines)


def sql_section(app: str, sql: dict) -> str:
    kinds = ", ".join(f"{kind} {count:g}" for kind, count in sql["kinds_per_stream"].items())
    statements = "\n".join(
        f"{index}. `{text[:160]}`" if text else f"{index}. {sqlcount.EMPTY}: the pool's check of a connection"
        for index, text in enumerate(sql["one_stream"], 1)
    )
    return (
        f"SQL per stream of {app}: {sql['per_stream']:g} ({kinds}) in {sql['round_trips_per_stream']:g} "
        f"round trips; new connections during the count: "
        f"{sql['connections']}.\nOne stream's statements, in order:\n{statements}"
    )


def problems(results: dict) -> list[str]:
    """What went wrong in any round: failures by reason, a dead server, a saturated client, R's readers."""
    found = []
    for (name, app), rounds in results.items():
        for index, f in enumerate(rounds, 1):
            where = f"{name}/{app} round {index}"
            found += [f"{where}: not measured, {error}" for error in f.get("errors", [])]
            for burst in ("c", "cold"):
                label = "C1000" if burst == "c" else "C1000 cold"
                if f"{burst}_failures" not in f:
                    continue
                if f[f"{burst}_failures"]:
                    found.append(f"{where}: {label} failures {f[f'{burst}_failure_reasons']}")
                if not f[f"{burst}_server_alive"]:
                    found.append(f"{where}: the server died during {label}")
            for key, scenario in SERVER_LOGS.items():
                if f.get(key):
                    found.append(f"{where}: the server logged {f[key]} ({scenario})")
            for key, scenario in FAILURES.items():
                if f.get(key):
                    found.append(f"{where}: {scenario} failures {f[key]}")
            if f.get("r_readers_failed"):
                found.append(f"{where}: R readers failed {f['r_readers_failed']}")
            if f.get("r_violations"):
                found.append(f"{where}: R found {f['r_violations']} readers' problems (listed at the end)")
            if "r_steady_lag_samples" in f and not f["r_steady_lag_samples"]:
                found.append(
                    f"{where}: R had no steady window (an answer ended before every reader attached)"
                )
            for scenario, key in (
                ("T", "t_client_cpu_pct"),
                ("C1000", "c_client_cpu_pct"),
                ("C1000 cold", "cold_client_cpu_pct"),
                ("R", "r_client_cpu_pct"),
            ):
                if f.get(key, 0) > 80:
                    found.append(f"{where}: the client used {f[key]:.0f} % of its core in {scenario}")
    return found
