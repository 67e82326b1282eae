"""Django's PostgreSQL backend, its pool checking a connection it hands out without a round trip.

With `CONN_HEALTH_CHECKS`, Django has the pool check every connection it hands out with an empty query:
two of an answer's eight statements (its start and its end each take a connection), for connections
that were given back a moment ago. The server says when it ends a connection — a restart, a failover,
`pg_terminate_backend`, an idle timeout: a FATAL message, then the socket's end — so a connection idle
in the pool that has something to read is checked with the round trip as before (and dropped when it
fails), and one with nothing to read is handed out as it is.
"""

import select

from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool


def check_connection(connection) -> None:
    """The pool's check: raises, as `ConnectionPool.check_connection` does, for a connection the server
    ended; costs a round trip only when the server sent something while the connection was idle."""
    if connection.closed or _readable(connection.fileno()):
        ConnectionPool.check_connection(connection)


def _readable(fileno: int) -> bool:
    poller = select.poll()  # not select(): a busy server's sockets go past its 1024 descriptors
    poller.register(fileno, select.POLLIN)
    return bool(poller.poll(0))


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        if pool is not None and pool._check is ConnectionPool.check_connection:
            # Django gives the pool its check when it creates it; psycopg_pool has no setter for it.
            pool._check = check_connection
        return pool
