"""Django's PostgreSQL backend with two round trips fewer: the pool checks a connection it hands out
without one, and a transaction's BEGIN is sent with its first statement. And an answer's start is
planned once per connection (`DatabaseWrapper.executing()`), its parse kept by psycopg.

The pool's check. With `CONN_HEALTH_CHECKS`, Django has the pool check every connection it hands out
with an empty query: a round trip for each of an answer's two connections (its start's and its end's),
for connections that were given back a moment ago. The server says when it ends a
connection — a restart, a failover, `pg_terminate_backend`, an idle timeout: a FATAL message, then the
socket's end — so a connection idle in the pool that has something to read is checked with the round
trip as before (and dropped when it fails), and one with nothing to read is handed out as it is.

The BEGIN. Out of autocommit, psycopg sends a transaction's BEGIN on its own and waits for it before
the first statement: a round trip of every transaction (an answer's start among them) that carries
nothing. Here psycopg stays in autocommit and Django alone knows that a transaction is wanted
(`transaction.atomic()`, `set_autocommit(False)`); the first statement of one is sent as
`BEGIN; <statement>`, one simple query, one round trip (`BeginWithFirstStatement`). The rest is
psycopg's: its `commit()` and `rollback()` look at the server's transaction status, not at autocommit.

The parse. Django's cursors merge a query's parameters into its text on the client
(`ClientCursor`); psycopg splits the text at its placeholders for that, and keeps the split of a text
it has seen only for texts of at most 50 parameters (`MAX_CACHED_STATEMENT_PARAMS`: a bulk INSERT's
text changes with its row count and would push the others out of its cache of 128). An answer's start
is one statement of some 70 parameters: it was split anew each time, its regular expression 7 % of the
server's CPU under `make bench`'s T. Here texts of up to `CACHED_PARSE_PARAMS` are kept.

The plan. PostgreSQL plans every simple query anew: the start's statement (six CTEs) takes ~0.5 ms to
plan when warm, ~2.4 ms on a new connection, of a round trip of ~3.5 ms (the machine at a third of its
speed). Prepared with SQL's PREPARE, its EXECUTE sent with the rest of the simple query, it is planned
once per connection (a generic plan after five): the round trip ~0.5 ms shorter (`executing()`).
psycopg's own prepared statements would need the extended protocol, one statement per message, so its
pipeline mode for the start's five in one round trip: measured, it cost more than it saved (first
chunk +1.2 ms, server CPU +0.9 ms per answer).
"""

import functools
import hashlib
import re
import select
import weakref

import psycopg
from django.db import ProgrammingError
from django.db.backends import utils
from django.db.backends.postgresql import base
from psycopg import IsolationLevel, _queries
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

CACHED_PARSE_PARAMS = 100
_queries.MAX_CACHED_STATEMENT_PARAMS = max(_queries.MAX_CACHED_STATEMENT_PARAMS, CACHED_PARSE_PARAMS)


def check_connection(connection) -> None:
    """The pool's check: raises, as `ConnectionPool.check_connection` does, for a connection the server
    ended; costs a round trip only when the server sent something while the connection was idle."""
    if connection.closed or _readable(connection.fileno()):
        ConnectionPool.check_connection(connection)


def _readable(fileno: int) -> bool:
    poller = select.poll()  # not select(): a busy server's sockets go past its 1024 descriptors
    poller.register(fileno, select.POLLIN)
    return bool(poller.poll(0))


class BeginWithFirstStatement:
    """A cursor of `DatabaseWrapper` that begins the transaction Django wants with its first statement:
    in the same simple query when it is one (SQL text run by a client-side cursor, as Django's are),
    else (many rows, a procedure, a server-side cursor) as a statement of its own just before it."""

    def _execute(self, statement, params, *ignored_wrapper_args):
        try:
            return self._execute_beginning(statement, params, *ignored_wrapper_args)
        except ProgrammingError as error:
            if isinstance(error.__cause__, psycopg.errors.InvalidSqlStatementName):
                self.db.forget_prepared()  # the server lost one (`DatabaseWrapper.executing()`)
            raise

    def _execute_beginning(self, statement, params, *ignored_wrapper_args):
        begin = self.db.transaction_to_begin()
        if begin is None:
            return super()._execute(statement, params, *ignored_wrapper_args)
        if not isinstance(statement, str) or not isinstance(self.cursor, psycopg.ClientCursor):
            self._begin_alone()
            return super()._execute(statement, params, *ignored_wrapper_args)
        super()._execute(f"{begin}; {statement}", params, *ignored_wrapper_args)
        self.cursor.nextset()  # the statement's result, not BEGIN's
        return self.cursor

    def _begin_alone(self) -> None:
        """Send the transaction's BEGIN as a statement of its own, when one is wanted."""
        if (begin := self.db.transaction_to_begin()) is not None:
            with self.db.wrap_database_errors:
                self.db.connection.execute(begin)

    def _executemany(self, statement, param_list, *ignored_wrapper_args):
        self._begin_alone()
        return super()._executemany(statement, param_list, *ignored_wrapper_args)

    def callproc(self, procname, params=None, kparams=None):
        self._begin_alone()
        return super().callproc(procname, params, kparams)

    def copy(self, statement):
        self._begin_alone()
        return self.cursor.copy(statement)


class CursorWrapper(BeginWithFirstStatement, utils.CursorWrapper):
    pass


class CursorDebugWrapper(BeginWithFirstStatement, base.CursorDebugWrapper):
    def copy(self, statement):
        with self.debug_sql(statement):
            return super().copy(statement)


_prepared_on: "weakref.WeakKeyDictionary[psycopg.Connection, set[str]]" = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=64)
def _prepared_form(sql: str) -> tuple[str, str, int]:
    """`sql`'s prepared statement: its name (of its text), its text with `$n` placeholders, their count."""
    count = 0

    def placeholder(match: re.Match) -> str:
        nonlocal count
        if match.group() == "%%":
            return "%"
        count += 1
        return f"${count}"

    if "%(" in sql:
        raise ValueError("A prepared statement's parameters are positional (%s).")
    body = re.sub(r"%%|%s", placeholder, sql)
    return f"chatsvc_{hashlib.blake2b(sql.encode(), digest_size=8).hexdigest()}", body, count


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        if pool is not None and pool._check is ConnectionPool.check_connection:
            # Django gives the pool its check when it creates it; psycopg_pool has no setter for it.
            pool._check = check_connection
        return pool

    def _set_autocommit(self, autocommit):
        """psycopg stays in autocommit (Django keeps `self.autocommit`): a transaction begins with its
        first statement. A connection of Django's own, not the pool's, starts out of it."""
        if not self.connection.autocommit:
            super()._set_autocommit(True)

    def transaction_to_begin(self) -> str | None:
        """The BEGIN to send before the next statement: Django wants a transaction and the server has
        none (None when it needs none)."""
        if self.autocommit or self.connection.info.transaction_status != TransactionStatus.IDLE:
            return None
        level = self.connection.isolation_level
        return (
            "BEGIN"
            if level is None
            else f"BEGIN ISOLATION LEVEL {IsolationLevel(level).name.replace('_', ' ')}"
        )

    def executing(self, sql: str) -> str:
        """The EXECUTE of `sql` (its parameters positional) as a statement prepared on this connection:
        PostgreSQL parses and plans it once per connection, not at every run. The EXECUTE takes `sql`'s
        parameters, in their order.

        It is prepared the first time, in a round trip of its own, on psycopg's connection: not as the
        first statement of the transaction Django wants, which begins after it (as its first statement
        it would fix a REPEATABLE READ transaction's snapshot before the locks the caller takes). A
        PREPARE that ran stays, whatever becomes of a transaction; one the server lost (`DEALLOCATE`,
        `DISCARD`) fails the statement that runs it, then this connection's are prepared again
        (`forget_prepared()`; those the server still has are found so)."""
        name, body, count = _prepared_form(sql)
        self.ensure_connection()
        prepared = _prepared_on.setdefault(self.connection, set())
        if name not in prepared:
            with self.wrap_database_errors:
                try:
                    self.connection.execute(f"PREPARE {name} AS {body}")
                except psycopg.errors.DuplicatePreparedStatement:
                    prepared.add(name)  # the server has it: this process had forgotten it
                    if self.connection.info.transaction_status != TransactionStatus.IDLE:
                        raise  # it failed the transaction it was sent in
            prepared.add(name)
        return f"EXECUTE {name}({', '.join(['%s'] * count)})"

    def forget_prepared(self) -> None:
        """Forget what is prepared on this connection: the server said it no longer has one of them."""
        _prepared_on.pop(self.connection, None)

    def make_cursor(self, cursor):
        return CursorWrapper(cursor, self)

    def make_debug_cursor(self, cursor):
        return CursorDebugWrapper(cursor, self)
