"""The tests' live servers (the root conftest's `asgi_server_factory`) run as a deployment would."""

from pathlib import Path

import pytest


@pytest.mark.django_db(transaction=True)
def test_a_server_started_while_async_unsafe_is_allowed_does_not_inherit_it(asgi_server_factory, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # as the Chromium fixture does
    monkeypatch.setenv("CHATSVC_TEST_MARKER", "inherited")
    server = asgi_server_factory(fresh=True)
    try:
        environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
    finally:
        server.stop()

    assert b"CHATSVC_TEST_MARKER=inherited" in environ  # the rest of the environment is passed on
    assert not [item for item in environ if item.startswith(b"DJANGO_ALLOW_ASYNC_UNSAFE=")]
