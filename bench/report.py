"""The bench's one table: medians over rounds per server and app, chatsvc / bare ratios, the targets."""

import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

import django

from bench import servers


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    digits: int
    target: str = ""
    ratio: bool = True


FIGURES = [
    Figure("t_streams_per_s", "T: streams/s (20 chunks, 50 in flight)", 0, "≥ 0.6 × bare (daphne)"),
    Figure("t_streams", "T: streams measured (median per round)", 0, "", ratio=False),
    Figure("t_cpu_ms", "T: server CPU ms / stream", 2),
    Figure("t_busy_pct", "T: server CPU busy, % of its core", 0, "", ratio=False),
    Figure("l_ttfc_p50", "L: time to first chunk p50, ms (10 in flight)", 1),
    Figure("l_ttfc_p99", "L: time to first chunk p99, ms", 1),
    Figure("c_completed", "C1000: completed (median)", 0, "1000, 0 failures", ratio=False),
    Figure("c_failures", "C1000: failed streams (all rounds)", 0, "0", ratio=False),
    Figure("c_first_p50", "C1000: first chunk p50, ms", 0),
    Figure("c_first_p99", "C1000: first chunk p99, ms", 0, "≤ 2 × bare"),
    Figure("c_gap_p99", "C1000: inter-chunk gap p99, ms (nominal 100)", 0, "≤ 2 × bare"),
    Figure("c_rss_idle_mb", "C1000: server RSS before, MB", 1),
    Figure("c_rss_peak_mb", "C1000: server RSS peak, MB", 1),
    Figure("c_open_peak", "C1000: most streams open at once (client's view)", 0, "", ratio=False),
    Figure("c_rss_per_stream_kb", "C1000: RSS per open stream, KB", 1, "≤ 100 KB"),
    Figure("c_pg_peak", "C1000: peak PostgreSQL connections", 0, "≤ 20", ratio=False),
]
SUMMED = {"c_failures"}  # failures are added over the rounds; every other figure is a median


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = models[0] if models else "?"
    versions = {name: _version(name) for name in ("daphne", "uvicorn", "psycopg")}
    psql = subprocess.run(["psql", "--version"], capture_output=True, text=True, check=False)
    postgres = psql.stdout.strip()
    pinning = "server on core 0, client on core 1 (taskset)" if servers.PINNING else "UNPINNED (no taskset)"
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


def ratio(chatsvc: float | None, bare: float | None) -> str:
    return "–" if not chatsvc or not bare else f"{chatsvc / bare:.2f}"


def table(results: dict[tuple[str, str], list[dict]], server_names: list[str], sql: dict) -> str:
    header = ["figure (median of rounds)"]
    for name in server_names:
        header += [f"{name} chatsvc", f"{name} bare", f"{name} ratio"]
    header.append("target")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for figure in FIGURES:
        row = [figure.label]
        for name in server_names:
            ours = combine(results[(name, "chatsvc")], figure.key)
            bare = combine(results[(name, "bare")], figure.key)
            shown = ratio(ours, bare) if figure.ratio else ""
            row += [cell(ours, figure.digits), cell(bare, figure.digits), shown]
        lines.append("| " + " | ".join([*row, figure.target]) + " |")
    lines.append(_overhead_row(results, server_names))
    sql_row = ["SQL statements / stream (BEGIN/COMMIT included)"]
    for _ in server_names:
        sql_row += [cell(sql["per_stream"], 1), "0", ""]
    lines.append("| " + " | ".join([*sql_row, "≤ 8"]) + " |")
    return "\n".join(lines)


def _overhead_row(results, server_names) -> str:
    row = ["L: first chunk p50 over bare's, ms"]
    for name in server_names:
        ours = combine(results[(name, "chatsvc")], "l_ttfc_p50")
        bare = combine(results[(name, "bare")], "l_ttfc_p50")
        row += ["–" if ours is None or bare is None else f"{ours - bare:+.1f}", "", ""]
    return "| " + " | ".join([*row, "≤ 5 ms"]) + " |"


def rounds_table(results: dict[tuple[str, str], list[dict]]) -> str:
    """Every round's main figures, to see the spread behind the medians."""
    lines = [
        "| server | app | round | T streams/s | T CPU ms | L p50 ms | C1000 done/failed | C1000 p99 first ms "
        "| C1000 gap p99 ms | peak PG | session s |",
        "|" + "---|" * 11,
    ]
    for (name, app), rounds in results.items():
        for index, f in enumerate(rounds, 1):
            lines.append(
                f"| {name} | {app} | {index} | {f['t_streams_per_s']:.0f} | {f['t_cpu_ms']:.2f} "
                f"| {f['l_ttfc_p50']:.1f} | {f['c_completed']}/{f['c_failures']} | {f['c_first_p99']:.0f} "
                f"| {f['c_gap_p99']:.0f} | {f['c_pg_peak']} | {f['session_s']:.0f} |"
            )
    return "\n".join(lines)


def sql_section(sql: dict) -> str:
    kinds = ", ".join(f"{kind} {count:g}" for kind, count in sql["kinds_per_stream"].items())
    statements = "\n".join(f"{index}. `{text[:160]}`" for index, text in enumerate(sql["one_stream"], 1))
    return (
        f"SQL per stream: {sql['per_stream']:g} ({kinds}); new connections during the count: "
        f"{sql['connections']}.\nOne stream's statements, in order:\n{statements}"
    )


def problems(results: dict[tuple[str, str], list[dict]]) -> list[str]:
    """What went wrong in any round: failures by reason, a dead server, a saturated client."""
    found = []
    for (name, app), rounds in results.items():
        for index, f in enumerate(rounds, 1):
            where = f"{name}/{app} round {index}"
            if f["c_failures"]:
                found.append(f"{where}: C1000 failures {f['c_failure_reasons']}")
            if f["server_errors"]:
                found.append(f"{where}: the server logged {f['server_errors']}")
            if f["t_failures"] or f["l_failures"]:
                found.append(f"{where}: T failures {f['t_failures']}, L failures {f['l_failures']}")
            if not f["c_server_alive"]:
                found.append(f"{where}: the server died during the burst")
            for scenario, key in (("T", "t_client_cpu_pct"), ("C1000", "c_client_cpu_pct")):
                if f[key] > 80:
                    found.append(f"{where}: the client used {f[key]:.0f} % of its core in {scenario}")
    return found
