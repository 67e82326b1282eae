"""The bench's own PostgreSQL database: re-created and migrated each run, and watched during a burst."""

import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import psycopg

ADMIN_URL = os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
NAME = os.environ.get("BENCH_DATABASE_NAME", "chatsvc_bench")
FORBIDDEN = {"chatsvc", "chatsvc_main", "chatsvc_web"}  # other sessions' databases


def url(*, via_port: int | None = None) -> str:
    """The bench database's URL; with `via_port`, through a local proxy listening on that port."""
    parts = urlsplit(ADMIN_URL)
    netloc = parts.netloc
    if via_port is not None:
        credentials = netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{via_port}" if credentials else f"127.0.0.1:{via_port}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{NAME}"))


def server_address() -> tuple[str, int]:
    parts = urlsplit(ADMIN_URL)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def admin() -> psycopg.Connection:
    return psycopg.connect(ADMIN_URL, autocommit=True)


def recreate() -> None:
    if NAME in FORBIDDEN or NAME.startswith("test_chatsvc"):
        raise SystemExit(f"refusing to drop {NAME!r}: it belongs to someone else")
    with admin() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{NAME}"')


def migrate_and_seed(env: dict[str, str]) -> str:
    """Migrate the bench database and create the bench user; return its API token."""
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, check=True)
    seeded = subprocess.run(
        [sys.executable, "-m", "bench.seed"], env=env, check=True, capture_output=True, text=True
    )
    return seeded.stdout.strip().splitlines()[-1]


class ConnectionCounter:
    """Counts the bench database's PostgreSQL connections (from the `postgres` database: not itself)."""

    def __init__(self) -> None:
        self.connection = admin()

    def count(self) -> int:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        return self.connection.execute(query, (NAME,)).fetchone()[0]

    def close(self) -> None:
        self.connection.close()
