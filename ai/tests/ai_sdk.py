"""The AI SDK (the `ai` npm package, pinned in ai/tests/js/package-lock.json) run in Node by the tests.

`node_run(...)` runs ai/tests/js/run.mjs: the SDK's own `DefaultChatTransport` / `WebSocketChatTransport`
and `readUIMessageStream` against a live server; it returns what each step read.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

JS_DIR = Path(__file__).parent / "js"


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "ai" / "package.json").is_file():
        pytest.fail(
            "The AI SDK tests need Node and the packages of ai/tests/js: `make test` installs them "
            "(bin/test-deps: `npm ci` there)."
        )
    return node


def node(scenario: str, options: dict, *, timeout: float = 120):
    completed = subprocess.run(
        [_node(), "run.mjs", scenario],
        input=json.dumps(options),
        capture_output=True,
        text=True,
        cwd=JS_DIR,
        timeout=timeout,
    )
    assert completed.returncode == 0, f"node {scenario} failed:\n{completed.stderr}"
    return json.loads(completed.stdout)


def node_run(steps: list[dict], transports: list[dict]) -> list[dict]:
    """Run `steps` (see run.mjs) on `transports` (each `{"kind": "http" | "ws", "baseUrl", "headers"…}`)."""
    return node("run", {"steps": steps, "transports": transports})


def ai_sdk_version() -> str:
    return json.loads((JS_DIR / "node_modules" / "ai" / "package.json").read_text())["version"]


def text_of(message: dict) -> str:
    """The text of a UI message, as `useChat` would show it."""
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")
