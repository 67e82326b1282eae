"""Fixtures of the project-level tests: Django in a child process (settings, a lost database), and a
real Chromium driven by Playwright for the web page."""

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
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
]


@pytest.fixture
def run_django():
    """Run `code` with `python -c` after `django.setup()`, in `env` added to a cleaned environment
    of a development machine (`DEBUG=true`); a variable given as None is left unset."""

    def run(code: str, **env: str | None) -> subprocess.CompletedProcess:
        child_env = {key: value for key, value in os.environ.items() if key not in CLEARED}
        child_env.update({"DJANGO_SETTINGS_MODULE": "chatsvc.settings", "DEBUG": "true", **env})
        child_env = {key: value for key, value in child_env.items() if value is not None}
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


# --- Browser tests: Playwright (sync API) driving the system's Chromium against a live daphne ----------

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def chromium(asgi_server_factory):
    """The system's Chromium (Debian's `chromium`), launched once a module; a test fails when it cannot start.

    Playwright's sync API keeps an asyncio event loop running in the test thread, so Django's ORM
    (the tests' fixtures, and the transactional tests' flush at teardown) would raise
    SynchronousOnlyOperation. Nothing else runs in that loop, so the check is switched off while the
    browser is up. The default live server starts first, so it does not inherit that switch. The
    loop ends with the module, so later tests can run their own (`asyncio.run`).
    """
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    asgi_server_factory()
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            try:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            except PlaywrightError as error:
                reason = error.message.splitlines()[0]
                browser = None
            if browser is None:
                pytest.fail(
                    f"Chromium could not be started from {CHROMIUM} ({reason}). "
                    "Install Debian's package: apt-get install -y chromium (make test does: bin/test-deps).",
                    pytrace=False,
                )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def expected_console_errors():
    """Substrings of console errors a test causes on purpose (a refused request logs one)."""
    return []


@pytest.fixture
def browser_page(chromium, live_asgi, expected_console_errors):
    """A fresh browser page on the live server; at teardown: no console errors, no page errors, no dialogs."""
    context = chromium.new_context(base_url=live_asgi.url, viewport={"width": 1200, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))

    def on_dialog(dialog):
        problems.append(f"dialog ({dialog.type}): {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield page
    context.close()
    unexpected = [text for text in problems if not any(part in text for part in expected_console_errors)]
    assert unexpected == [], f"console errors, page errors or dialogs: {unexpected}"


def _log_in(page, username: str = "alice", password: str = "alice-password") -> None:
    page.goto("/accounts/login/?next=/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")
    page.locator("#quota").filter(has_text="left").wait_for()


@pytest.fixture
def log_in():
    """`log_in(page, username, password)`: log in through the login form, wait for the chat page."""
    return _log_in


@pytest.fixture
def chat_page(browser_page, user, log_in):
    """The chat page, logged in as `user` (alice) through the login form."""
    log_in(browser_page)
    return browser_page
