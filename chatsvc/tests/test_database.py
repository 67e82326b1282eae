"""The pool's check of a connection it hands out (`chatsvc.database`): a live one without a round trip,
one the server ended replaced — against the real PostgreSQL, with pools of one connection; its BEGIN
with the first statement; a start's parse kept by psycopg; statements prepared once per connection
(`executing()`)."""

import tempfile
from contextlib import contextmanager

import psycopg
import pytest
from django.db import IntegrityError, ProgrammingError, connection, connections, transaction
from psycopg import _queries
from psycopg_pool import ConnectionPool

from ai import services
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


# --- A transaction's BEGIN rides with its first statement --------------------------------------------
@pytest.fixture
def probe_table(transactional_db):
    """A table of its own, created and dropped outside any transaction; yields a psycopg connection
    of another session, to see what has been committed."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE begin_probe (n integer PRIMARY KEY)")
    settings = connection.settings_dict
    other = psycopg.connect(
        psycopg.conninfo.make_conninfo(
            dbname=settings["NAME"],
            user=settings["USER"],
            host=settings["HOST"],
            port=settings["PORT"] or None,
        ),
        autocommit=True,
    )
    try:
        yield other
    finally:
        other.close()
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE begin_probe")


def committed(other) -> list[int]:
    return [n for (n,) in other.execute("SELECT n FROM begin_probe ORDER BY n")]


@contextmanager
def sent_queries():
    """The simple queries the Django connection sends meanwhile, as libpq's trace logs them."""
    connection.ensure_connection()
    pgconn = connection.connection.pgconn  # the same once Django's connection went back to the pool
    sent: list[str] = []
    with tempfile.TemporaryFile() as trace:
        pgconn.trace(trace.fileno())
        try:
            yield sent
        finally:
            pgconn.untrace()
            trace.seek(0)
            lines = trace.read().decode().splitlines()
    sent += [line.split("\t", 4)[4].strip(' "') for line in lines if "\tF\t" in line and "\tQuery\t" in line]


def test_a_transaction_begins_with_its_first_statement_in_one_round_trip(probe_table):
    with sent_queries() as sent, transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO begin_probe VALUES (%s)", [1])
            assert cursor.rowcount == 1  # the INSERT's result, not BEGIN's
            cursor.execute("SELECT count(*) FROM begin_probe")
            assert cursor.fetchone() == (1,)
        assert committed(probe_table) == []  # a transaction: not seen elsewhere before its end
    assert sent == ["BEGIN; INSERT INTO begin_probe VALUES (1)", "SELECT count(*) FROM begin_probe", "COMMIT"]
    assert committed(probe_table) == [1]


def test_an_error_rolls_the_whole_transaction_back(probe_table):
    def insert_twice():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("INSERT INTO begin_probe VALUES (1)")
            cursor.execute("INSERT INTO begin_probe VALUES (1)")

    with pytest.raises(IntegrityError):
        insert_twice()
    assert committed(probe_table) == []
    with connection.cursor() as cursor:  # the connection is usable again, in autocommit
        cursor.execute("INSERT INTO begin_probe VALUES (2)")
    assert committed(probe_table) == [2]


def test_a_transaction_without_a_statement_sends_nothing(probe_table):
    with sent_queries() as sent, transaction.atomic():
        pass
    assert sent == []


@pytest.mark.parametrize("first", ["executemany", "savepoint"])
def test_statements_that_cannot_carry_it_begin_the_transaction_before_them(probe_table, first):
    def insert_then_fail():
        with transaction.atomic(), connection.cursor() as cursor:
            if first == "executemany":
                cursor.executemany("INSERT INTO begin_probe VALUES (%s)", [(1,), (2,)])
            else:
                with transaction.atomic():  # a savepoint
                    cursor.execute("INSERT INTO begin_probe VALUES (1)")
            assert committed(probe_table) == []
            raise RuntimeError

    with pytest.raises(RuntimeError):
        insert_then_fail()
    assert committed(probe_table) == []


def test_the_connections_isolation_level_is_kept(transactional_db):
    connection.ensure_connection()
    connection.connection.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SHOW transaction_isolation")
            assert cursor.fetchone() == ("serializable",)
    finally:
        connection.connection.isolation_level = None


def test_an_answers_start_is_split_at_its_placeholders_once(transactional_db, user, monkeypatch):
    """The start's one statement (some 70 parameters) is parsed by psycopg once: the next starts find
    its parse in psycopg's cache (`CACHED_PARSE_PARAMS`); at psycopg's own limit, each start parses it."""
    parsed = []
    parse = _queries._query2pg_client_nocache  # what psycopg calls for a text it does not cache

    def counted(query, encoding):
        parsed.append(query)
        return parse(query, encoding)

    monkeypatch.setattr(_queries, "_query2pg_client_nocache", counted)
    services.stream_start(user=user, message="Hello")
    services.stream_start(user=user, message="Hello")
    assert parsed == []
    monkeypatch.setattr(_queries, "MAX_CACHED_STATEMENT_PARAMS", 50)
    services.stream_start(user=user, message="Hello")
    assert [b"EXECUTE chatsvc_" in query for query in parsed] == [True]  # the start's statement


def test_a_statement_is_prepared_once_per_connection(probe_table):
    """`executing()`: the PREPARE in a round trip of its own the first time on a connection, out of the
    transaction; then only the EXECUTE, though the transaction rolled back. Another connection prepares
    its own."""
    insert = "INSERT INTO begin_probe VALUES (%s)"

    def insert_then_fail():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(connection.executing(insert), [1])
            raise RuntimeError

    with sent_queries() as sent:
        with pytest.raises(RuntimeError):
            insert_then_fail()
        with connection.cursor() as cursor:
            cursor.execute(connection.executing(insert), [2])
    name = sent[0].split()[1]
    assert sent == [
        f"PREPARE {name} AS INSERT INTO begin_probe VALUES ($1)",  # not in the transaction
        f"BEGIN; EXECUTE {name}(1)",
        "ROLLBACK",
        f"EXECUTE {name}(2)",
    ]
    assert committed(probe_table) == [2]
    with transaction.atomic():  # holds this connection: the other one is another
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute(other.executing(insert), [3])
                cursor.execute("SELECT name FROM pg_prepared_statements")
                assert (name,) in cursor.fetchall()
        finally:
            other.close()
    assert committed(probe_table) == [2, 3]


def test_statements_the_server_lost_are_prepared_again(probe_table):
    """One lost (`DEALLOCATE`) fails the statement that runs it, once; then this connection's are
    prepared again, those the server still has found so."""
    first, second = "INSERT INTO begin_probe VALUES (%s)", "INSERT INTO begin_probe SELECT %s + 100"
    with connection.cursor() as cursor:
        cursor.execute(connection.executing(first), [1])
        cursor.execute(connection.executing(second), [1])
        cursor.execute(connection.executing(first).replace("EXECUTE", "DEALLOCATE").removesuffix("(%s)"))
        with pytest.raises(ProgrammingError):
            cursor.execute(connection.executing(first), [2])
        cursor.execute(connection.executing(second), [2])  # its PREPARE finds it there
        cursor.execute(connection.executing(first), [3])
    assert committed(probe_table) == [1, 3, 101, 102]


def test_another_postgresql_engine_runs_the_start_unprepared(transactional_db, user, monkeypatch):
    """An engine without `executing()` (PostGIS's, say): the start's statement is sent as it is."""
    monkeypatch.delattr(type(connections["default"]), "executing")
    with sent_queries() as sent:
        services.stream_start(user=user, message="Hello")
    start = next(query for query in sent if "FOR UPDATE" in query)  # its first line: the trace's
    assert "WITH step_0" in start
    assert "EXECUTE" not in start
    assert not any(query.startswith("PREPARE") for query in sent)


def test_a_prepared_start_takes_limits_beyond_a_32_bit_integer(transactional_db, user, settings):
    """A prepared statement's parameter takes the type of the column it meets (`request_limit`: an
    integer); a default limit is not a column's value and may be larger."""
    settings.QUOTA_DEFAULT_REQUEST_LIMIT = settings.QUOTA_DEFAULT_TOKEN_LIMIT = 2**40
    services.stream_start(user=user, message="Hello")
    services.stream_start(user=user, message="Hello")
