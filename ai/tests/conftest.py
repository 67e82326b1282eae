"""Fixtures of the `ai` tests: the fake OpenAI-compatible server (movable to the root conftest as is)."""

import pytest

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
