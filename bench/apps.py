"""The apps the bench serves: today's chatsvc, a `--baseline` checkout of it, and the bare Django view.

An `App` is what a server process needs to serve one of them: its source tree (the server's working
directory and `PYTHONPATH`), its ASGI application, its environment and its bench user's token. The
baseline is built by `baseline()`: a temporary `git worktree` of the ref (sharing this `.venv`) with a
database of its own, migrated by its own migrations.
"""

import json
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.database import NAME, Database

ROOT = Path(__file__).resolve().parent.parent
METRICS_DIR = ROOT / "bench" / "results" / "metrics"
MOCK_WITHOUT_DELAY = {"default": {"BACKEND": "ai.adapters.mock.MockAdapter", "OPTIONS": {"delay": 0}}}


@dataclass(frozen=True)
class App:
    name: str  # "chatsvc", "baseline" or "bare": the column it fills in the table
    target: str  # the ASGI application, `module:attribute`
    root: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)
    token: str = ""
    database: Database | None = None

    def with_env(self, **env: str) -> "App":
        return replace(self, env={**self.env, **env})


def chatsvc_env(database_url: str, *, log_level: str = "WARNING") -> dict[str, str]:
    """chatsvc in production shape, on a bench database with the mock adapter and no built-in delay."""
    return {
        "DATABASE_URL": database_url,
        "DEBUG": "false",
        "SECRET_KEY": "bench-secret-key-not-for-production-0123456789",
        "ALLOWED_HOSTS": "*",
        "LOG_LEVEL": log_level,
        "AI_ADAPTERS": json.dumps(MOCK_WITHOUT_DELAY),
        "AI_DEFAULT_ADAPTER": "default",
        "REDIS_URL": "",  # one process unless a scenario says otherwise (R)
        "METRICS_DIR": str(METRICS_DIR),
    }


def _chatsvc_app(name: str, root: Path, database: Database) -> App:
    """A chatsvc tree served on `database`, re-created, migrated and seeded for this run."""
    database.recreate()
    env = chatsvc_env(database.url())
    token = database.migrate_and_seed(root, env)
    return App(name, "chatsvc.asgi:application", root, env, token, database)


def chatsvc() -> App:
    shutil.rmtree(METRICS_DIR, ignore_errors=True)  # counters of an earlier run's processes
    return _chatsvc_app("chatsvc", ROOT, Database())


def bare() -> App:
    return App("bare", "bench.bare_asgi:application")


def _git(*arguments: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *arguments], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(arguments)} failed:\n{done.stderr}")
    return done.stdout.strip()


@contextmanager
def baseline(ref: str):
    """The chatsvc of `ref` (a commit, a branch, a tag), checked out in a temporary worktree for the run."""
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    path = Path(tempfile.mkdtemp(prefix=f"chatsvc-baseline-{commit[:7]}-"))
    _git("worktree", "add", "--detach", "--quiet", str(path), commit)
    try:
        yield _chatsvc_app("baseline", path, Database(f"{NAME}_baseline"))
    finally:
        _git("worktree", "remove", "--force", str(path))
        shutil.rmtree(path, ignore_errors=True)


def describe(ref: str) -> str:
    """`6031106 (Quota concurrency tests: …)`: the ref as the report names it."""
    return _git("log", "-1", "--format=%h (%s)", ref)
