"""A py-spy profile of the chatsvc server under the T load: the functions that use its CPU.

py-spy samples the server from outside (`--nonblocking`: the server is not paused), keeping only the
thread that holds the GIL (`--gil`: Python at work, not threads waiting on a socket, a lock or epoll);
self time is where a sample's stack ends, total time anywhere on it.
"""

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.scenarios import Scale, throughput
from bench.servers import CLIENT_CORE, Server, pinned


def py_spy() -> str | None:
    beside_python = Path(sys.executable).parent / "py-spy"
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


def record(server: Server, scale: Scale, raw_path: Path) -> dict:
    """Run T under py-spy; return the T figures (inflated by the sampling) and write raw stacks."""
    command = [py_spy(), "record", "--pid", str(server.process.pid), "--nonblocking", "--gil"]
    command += ["--rate", "200", "--format", "raw", "--output", str(raw_path)]
    spy = subprocess.Popen(pinned(CLIENT_CORE, command), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        return throughput(server, scale)
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)


PROJECT = ("ai", "chatsvc", "conversations", "quota")
TOTAL_TIME_PACKAGES = (*PROJECT, "rest_framework", "asgiref")


def _where(frame: str) -> tuple[str, str]:
    """`name (django/db/models/query.py:123)` → (`name (models/query.py)`, `django.db`)."""
    name, _, where = frame.partition(" (")
    parts = where.rstrip(")").rsplit(":", 1)[0].split("/")
    package = ".".join(parts[:2]) if parts[0] == "django" and len(parts) > 2 else parts[0].removesuffix(".py")
    return f"{name} ({'/'.join(parts[-2:])})", package


def summarise(raw_path: Path, top: int = 15) -> str:
    own, own_package, anywhere, total = Counter(), Counter(), Counter(), 0
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [_where(frame) for frame in stack.split(";")]
        total += int(count)
        own[frames[-1][0]] += int(count)
        own_package[frames[-1][1]] += int(count)
        for function in {name for name, package in frames if package in TOTAL_TIME_PACKAGES}:
            anywhere[function] += int(count)
    if not total:
        return "py-spy recorded no samples."

    def listing(title: str, counter: Counter) -> str:
        rows = "\n".join(f"| {100 * n / total:.1f} % | `{name}` |" for name, n in counter.most_common(top))
        return f"{title}\n\n| share | where |\n|---|---|\n{rows}"

    return "\n\n".join(
        [
            f"{total} samples holding the GIL.",
            listing("Self time by package:", own_package),
            listing("Self time by function:", own),
            listing("Total time (on the stack) of chatsvc's, DRF's and asgiref's functions:", anywhere),
        ]
    )
