"""Running Django in a child process, for what only a fresh start can show (settings, a lost database)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]

# Settings this suite's environment may carry that would change what a child process sees.
CLEARED = [
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "AI_ADAPTERS",
    "AI_DEFAULT_ADAPTER",
    "AI_CONTEXT_MESSAGES",
    "QUOTA_DEFAULT_TOKEN_LIMIT",
    "QUOTA_DEFAULT_REQUEST_LIMIT",
]


@pytest.fixture
def run_django():
    """Run `code` with `python -c` after `django.setup()`, in `env` (added to a cleaned environment)."""

    def run(code: str, **env: str) -> subprocess.CompletedProcess:
        child_env = {key: value for key, value in os.environ.items() if key not in CLEARED}
        child_env.update(DJANGO_SETTINGS_MODULE="chatsvc.settings", **env)
        script = f"import django\ndjango.setup()\n{code}"
        return subprocess.run(
            [sys.executable, "-c", script],
            cwd=BASE_DIR,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run
