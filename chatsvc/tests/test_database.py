"""The pool's check of a connection it hands out (`chatsvc.database`): a live one without a round trip,
one the server ended replaced — against the real PostgreSQL, with pools of one connection."""

import tempfile
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection, connections
from psycopg_pool import ConnectionPool

from chatsvc.database.base import check_connection

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="the pool is PostgreSQL's")


@pytest.fixture
def conninfo(db) -> str:
    settings = connection.settings_dict
    return psycopg.conninfo.make_conninfo(
        dbname=settings["NAME"], user=settings["USER"], host=settings["HOST"], port=settings["PORT"] or None
    )


@contextmanager
def pool_of_one(conninfo: str, check):
    with ConnectionPool(conninfo, min_size=1, max_size=1, check=check, kwargs={"autocommit": True}) as pool:
        yield pool


def backend_pid(pool: ConnectionPool) -> int:
    with pool.connection() as conn:
        return conn.info.backend_pid


def terminate(conninfo: str, pid: int) -> None:
    """End a backend from another connection, as a restart or `idle_session_timeout` would, and wait
    until it has exited."""
    with psycopg.connect(conninfo, autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s, 5000)", [pid]).fetchone() == (True,)


def test_a_connection_the_server_ended_while_it_was_idle_is_replaced(conninfo):
    with pool_of_one(conninfo, check_connection) as pool:
        ended = backend_pid(pool)
        terminate(conninfo, ended)
        with pool.connection() as conn:  # no error: the check saw the server's word and replaced it
            assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] != ended


def test_without_a_check_the_ended_connection_would_be_handed_out(conninfo):
    """The control of the test above: the pool alone does not notice."""
    with pool_of_one(conninfo, None) as pool:
        terminate(conninfo, backend_pid(pool))
        with pytest.raises(psycopg.OperationalError), pool.connection() as conn:
            conn.execute("SELECT 1")


def test_a_live_connection_is_handed_out_without_a_round_trip(conninfo):
    with pool_of_one(conninfo, check_connection) as pool, tempfile.TemporaryFile() as trace:
        with pool.connection() as conn:
            conn.pgconn.trace(trace.fileno())  # libpq's log of every protocol message
        with pool.connection() as again:
            assert again is conn
            again.execute("SELECT 1")
            again.pgconn.untrace()
        trace.seek(0)
        sent = [line.split("\t")[3] for line in trace.read().decode().splitlines() if "\tF\t" in line]
    assert sent == ["Query"]  # the SELECT 1 only, no empty query before it


def test_django_gives_its_pool_this_check(transactional_db):
    """What settings.py selects: Django's pool checks with `check_connection`, not psycopg's round trip."""
    default = connections["default"]
    default.ensure_connection()
    assert type(default).__module__ == "chatsvc.database.base"
    assert default.pool._check is check_connection  # psycopg_pool's attribute: a rename would show here
