"""Fixtures shared by every app's tests; the suite runs on PostgreSQL (DATABASE_URL)."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psycopg
import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

POSTGRES_HELP = """
PostgreSQL is not reachable at {url}
  ({error})
The tests run on a real PostgreSQL. Start one, then run `make test` again:
  docker compose up -d db                                   # the project's compose file, or
  pg_ctlcluster --skip-systemctl-redirect 15 main start      # the local service (Debian)
or point DATABASE_URL at another server.
"""


def pytest_configure(config):
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        pytest.exit(
            "The tests need PostgreSQL: set DATABASE_URL=postgres://… (`make test` does).", returncode=2
        )
    try:
        psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", connect_timeout=3).close()
    except psycopg.OperationalError as error:
        pytest.exit(POSTGRES_HELP.format(url=url, error=str(error).strip()), returncode=2)


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """PBKDF2 with one iteration. A hash names its iteration count, so the live servers the tests
    start (with the stock hashers) check these passwords too."""

    iterations = 1


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    """Hashing passwords the production way is most of the cost of the user fixtures."""
    settings.PASSWORD_HASHERS = ["conftest.FastPBKDF2PasswordHasher"]


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="alice-password")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="bob", password="bob-password")


@pytest.fixture
def token(user):
    return Token.objects.create(user=user)


@pytest.fixture
def api(token):
    """An API client authenticated as `user` with its token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


# Small pools that shrink back to one connection soon after a test's burst: a session keeps a server
# per configuration (twenty and more), and PostgreSQL's default max_connections is 100.
# The servers run the project's settings on a development machine (DEBUG=true: local hosts, the
# development key), whatever the test process's own environment holds.
SERVER_DEFAULTS = {
    "PYTHONUNBUFFERED": "1",
    "DATABASE_POOL_MIN_SIZE": "1",
    "DATABASE_POOL_MAX_SIZE": "8",
    "DATABASE_POOL_MAX_IDLE": "2",
    "DJANGO_SETTINGS_MODULE": "chatsvc.settings",
    "DEBUG": "true",
}


class LiveASGIServer:
    """An ASGI server (daphne or uvicorn) in its own process, on the test database."""

    ready_statuses = (200,)  # what /healthz answers once it serves

    def __init__(self, *, server: str, env: dict[str, str], database_url: str, log_path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = {
            "daphne": [
                sys.executable,
                "-m",
                "daphne",
                "-e",
                f"tcp:port={self.port}:interface=127.0.0.1:backlog=2048",
            ],
            "uvicorn": [
                *(sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port)),
                *("--backlog", "2048"),
            ],
        }[server] + ["chatsvc.asgi:application"]
        self.log_path = log_path
        self.process = subprocess.Popen(
            command,
            env={**_inherited_environment(), **SERVER_DEFAULTS, "DATABASE_URL": database_url, **env},
            stdout=open(log_path, "wb"),  # noqa: SIM115 (the process owns it)
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop(signal.SIGKILL)  # its test fails; its process must not outlive it
            raise

    def _wait_until_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=10).status_code in self.ready_statuses:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"the server did not start in {timeout} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# Set in the test process by fixtures that need it there (the Chromium fixture), never for a server:
# Django's check that the ORM is not called from the event loop must stay on in the servers.
NOT_INHERITED = {"DJANGO_ALLOW_ASYNC_UNSAFE"}


def _inherited_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in NOT_INHERITED}


class StartingServer(LiveASGIServer):
    """A live server that is ready once it answers at all: its /healthz is meant to say 503."""

    ready_statuses = (200, 503)


class RedisServer:
    """A redis-server of this test's own on a free port (never the machine's)."""

    def __init__(self, port: int | None = None):
        self.port = port or _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self._accepts():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop it and start a new, empty one on the same port (Redis keeps nothing on disk here)."""
        self.stop()
        self.__init__(self.port)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def test_database_url(django_db_setup) -> str:
    """The URL of the test database, for servers and workers started in other processes."""
    from django.db import connection

    settings_dict = connection.settings_dict
    user = settings_dict["USER"] or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict["PASSWORD"] else ""
    host = settings_dict["HOST"] or "127.0.0.1"
    port = settings_dict["PORT"] or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture(scope="session")
def asgi_server_factory(test_database_url, tmp_path_factory):
    """Start (once per configuration) a real ASGI server on the test database.

    `asgi_server_factory(server="daphne", **env)` returns a `LiveASGIServer`; `env` are the
    server's extra environment variables (settings), so tests can run it configured as they need.
    Its data must be committed: use it from `django_db(transaction=True)` tests.
    """
    servers: dict[tuple, LiveASGIServer] = {}

    def start(server: str = "daphne", fresh: bool = False, **env: str) -> LiveASGIServer:
        key = (server, tuple(sorted(env.items())))
        if fresh or key not in servers or servers[key].process.poll() is not None:
            log_path = tmp_path_factory.mktemp("server") / f"{server}.log"
            instance = LiveASGIServer(
                server=server, env=env, database_url=test_database_url, log_path=log_path
            )
            if fresh:
                return instance
            servers[key] = instance
        return servers[key]

    yield start
    for instance in servers.values():
        instance.stop()


@pytest.fixture
def live_asgi(asgi_server_factory):
    """The default server: daphne with the mock adapter and stock settings."""
    return asgi_server_factory()
