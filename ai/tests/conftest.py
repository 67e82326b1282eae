"""Fixtures of the `ai` tests: the fake OpenAI-compatible server (movable to the root conftest as is),
a logged-in session."""

import httpx
import pytest
from django.conf import settings
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client as DjangoClient

from ai.tests.fake_openai import FakeOpenAI


@pytest.fixture(scope="session")
def fake_openai_server():
    """One fake server for the whole session, on 127.0.0.1 and a free port."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake_openai(fake_openai_server):
    """The session's fake server, its record of requests emptied for this test."""
    fake_openai_server.clear()
    return fake_openai_server


@pytest.fixture
def session(user):
    """The cookies of a logged-in session of `user` (stored in the test database) with a CSRF cookie,
    and that CSRF token: a browser's credentials, for the live servers."""
    django_client = DjangoClient()
    django_client.force_login(user)
    csrf = _get_new_csrf_string()
    session_id = django_client.cookies[settings.SESSION_COOKIE_NAME].value
    return {settings.SESSION_COOKIE_NAME: session_id, settings.CSRF_COOKIE_NAME: csrf}, csrf


@pytest.fixture
def token_client(live_asgi, token):
    """An httpx client of the live server, authenticated by `token`."""
    with httpx.Client(
        base_url=live_asgi.url, headers={"Authorization": f"Token {token.key}"}, timeout=30
    ) as client:
        yield client
