"""The server under test: daphne or uvicorn serving one `App` (chatsvc, the baseline, bare), pinned to core 0.

`Server` starts one process in the app's source tree, waits until `/healthz` answers, and reads the
process's CPU time and resident memory from /proc while it runs.
"""

import http.client
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.apps import App

BACKLOG = 2048
SERVER_CORE, CLIENT_CORE = 0, 1
PINNING = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
UVICORN_LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
UVICORN_HTTP = "httptools" if importlib.util.find_spec("httptools") else "h11"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
EXCEPTION_LINE = re.compile(r"^((?:\w+\.)*\w*(?:Error|Exception|Timeout|Exit)): ")


def pinned(core: int, command: list[str]) -> list[str]:
    """`command` run on one core (`taskset -c`), when taskset exists and there are two cores."""
    return ["taskset", "-c", str(core), *command] if PINNING else command


def server_command(server: str, target: str, port: int) -> list[str]:
    if server == "daphne":
        # daphne has no --backlog flag; Twisted's endpoint string sets it. -v 0: no access log.
        endpoint = f"tcp:port={port}:interface=127.0.0.1:backlog={BACKLOG}"
        arguments = ["-m", "daphne", "-v", "0", "-e", endpoint]
    else:
        arguments = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--backlog", str(BACKLOG)]
        # --lifespan auto: chatsvc's lifespan writes its answers' ends at shutdown; bare Django has none.
        arguments += ["--no-access-log", "--log-level", "warning", "--lifespan", "auto"]
        arguments += ["--loop", UVICORN_LOOP, "--http", UVICORN_HTTP]
    return pinned(SERVER_CORE, [sys.executable, *arguments, target])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One server process; `with Server("daphne", app, log_path=…) as server:` starts it and stops it."""

    def __init__(self, server: str, app: App, *, log_path: Path):
        self.server, self.app = server, app
        self.port = free_port()
        self.command = server_command(server, app.target, self.port)
        self.env = {**os.environ, **app.env, "PYTHONPATH": str(app.root)}
        self.log_path = log_path

    def __enter__(self) -> "Server":
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.app.root, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_serving()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _wait_until_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.server} ({self.app.name}) exited:\n{self.log_tail()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(
            f"{self.server} ({self.app.name}) did not start in {timeout} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def errors(self) -> dict[str, int]:
        """The exceptions the server logged (`psycopg_pool.PoolTimeout: …` lines), counted by name."""
        found = Counter()
        for line in self.log_path.read_text(errors="replace").splitlines():
            if match := EXCEPTION_LINE.match(line):
                found[match.group(1)] += 1
        return dict(found)

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process (all its threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14, 15

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0
