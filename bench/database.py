"""The bench's own PostgreSQL databases: re-created and migrated each run, and watched during a burst.

`chatsvc_bench` serves today's chatsvc; `chatsvc_bench_baseline` the `--baseline` checkout's, migrated by
that checkout's own migrations.
"""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ADMIN_URL = os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
NAME = os.environ.get("BENCH_DATABASE_NAME", "chatsvc_bench")
FORBIDDEN = {"chatsvc", "chatsvc_main", "chatsvc_web"}  # other sessions' databases
SEED = Path(__file__).resolve().parent / "seed.py"


def admin() -> psycopg.Connection:
    return psycopg.connect(ADMIN_URL, autocommit=True)


def server_address() -> tuple[str, int]:
    parts = urlsplit(ADMIN_URL)
    return parts.hostname or "127.0.0.1", parts.port or 5432


class Database:
    """One bench database, by name (`Database()`: today's chatsvc's)."""

    def __init__(self, name: str = NAME) -> None:
        if name in FORBIDDEN or name.startswith("test_chatsvc"):
            raise SystemExit(f"refusing to use {name!r} for the bench: it belongs to someone else")
        self.name = name

    def url(self, *, via_port: int | None = None) -> str:
        """The database's URL; with `via_port`, through a local proxy listening on that port."""
        parts = urlsplit(ADMIN_URL)
        netloc = parts.netloc
        if via_port is not None:
            credentials = netloc.rpartition("@")[0]
            netloc = f"{credentials}@127.0.0.1:{via_port}" if credentials else f"127.0.0.1:{via_port}"
        return urlunsplit(parts._replace(netloc=netloc, path=f"/{self.name}"))

    def recreate(self) -> None:
        with admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{self.name}"')

    def migrate_and_seed(self, root: Path, env: dict[str, str]) -> str:
        """Migrate it with the source tree `root`'s migrations, create the bench user; return its token."""
        env = {**os.environ, **env, "PYTHONPATH": str(root)}
        migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
        migrated = subprocess.run(migrate, cwd=root, env=env, capture_output=True, text=True, check=False)
        if migrated.returncode != 0:  # its system check warnings are the servers' too: shown on failure only
            raise RuntimeError(f"migrate failed in {root}:\n{migrated.stdout}{migrated.stderr}")
        seeded = subprocess.run(
            [sys.executable, str(SEED)], cwd=root, env=env, check=True, capture_output=True, text=True
        )
        return seeded.stdout.strip().splitlines()[-1]

    def connection_counter(self) -> "ConnectionCounter":
        return ConnectionCounter(self.name)


class ConnectionCounter:
    """Counts a database's PostgreSQL connections (from the `postgres` database: not itself).

    PostgreSQL is shared with other sessions' tests: when it has no connection left for the counter,
    that sample is lost (None), not the run."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connection: psycopg.Connection | None = None

    def count(self) -> int | None:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        try:
            if self.connection is None or self.connection.closed:
                self.connection = admin()
            return self.connection.execute(query, (self.name,)).fetchone()[0]
        except psycopg.OperationalError:
            return None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
