"""Fixtures shared by every app's tests; the suite runs on PostgreSQL (DATABASE_URL)."""

import os

import psycopg
import pytest
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
