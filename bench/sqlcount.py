"""SQL statements per stream, counted on the wire: a PostgreSQL proxy that reads what the server sends.

The chatsvc server is pointed at this proxy (`DATABASE_URL` on its port) and the proxy relays every byte
to PostgreSQL, reading the client's side of the protocol: each simple `Query` message and each
extended-protocol `Execute` is one statement, whatever sent it (Django's ORM, its transactions'
BEGIN/COMMIT/SAVEPOINT, the token lookup, the connection pool). So the count is what PostgreSQL was
asked to do, not what the ORM says it did. A simple query may carry several statements (a transaction's
BEGIN is sent with its first statement: `chatsvc.database`): each is counted, and the round trips —
a simple query, or an extended-protocol `Sync` — apart. TLS is refused (`N`) so the protocol can be read.
"""

import asyncio
import struct
import threading
from collections import Counter

SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104


class StatementLog:
    """The statements seen, in order (shared by every proxied connection; reset between measurements)."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.round_trips = 0
        self.connections = 0
        self.lock = threading.Lock()

    def add(self, *texts: str, round_trip: bool = False) -> None:
        with self.lock:
            self.statements += [" ".join(text.split()) for text in texts]
            self.round_trips += round_trip

    def reset(self) -> tuple[list[str], int, int]:
        with self.lock:
            taken = self.statements, self.round_trips, self.connections
            self.statements, self.round_trips, self.connections = [], 0, 0
        return taken


def statements_of(query: str) -> list[str]:
    """The statements of a simple query, split at the semicolons outside quoted literals (psycopg
    doubles a quote inside one, so each quote toggles); an empty query is one, empty statement."""
    statements, start, quoted = [], 0, False
    for index, character in enumerate(query):
        if character == "'":
            quoted = not quoted
        elif character == ";" and not quoted:
            statements.append(query[start:index])
            start = index + 1
    statements.append(query[start:])
    return [text for text in statements if text.strip()] or [""]


class ClientSide:
    """Parses the client's messages of one connection; logs its statements."""

    def __init__(self, log: StatementLog) -> None:
        self.log = log
        self.prepared: dict[bytes, str] = {}  # statement name → SQL
        self.portals: dict[bytes, str] = {}  # portal name → SQL

    def message(self, kind: bytes, body: bytes) -> None:
        if kind == b"Q":
            self.log.add(*statements_of(body.rstrip(b"\0").decode(errors="replace")), round_trip=True)
        elif kind == b"P":
            name, query = body.split(b"\0", 2)[:2]
            self.prepared[name] = query.decode(errors="replace")
        elif kind == b"B":
            portal, name = body.split(b"\0", 2)[:2]
            self.portals[portal] = self.prepared.get(name, "?")
        elif kind == b"E":
            self.log.add(self.portals.get(body.split(b"\0", 1)[0], "?"))
        elif kind == b"S":
            self.log.add(round_trip=True)


async def relay_client(reader, writer, server_writer, parser: ClientSide) -> None:
    """The client's startup (refusing TLS), then its typed messages, parsed and passed on."""
    while True:
        length, code = struct.unpack("!ii", await reader.readexactly(8))
        rest = await reader.readexactly(length - 8)
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            writer.write(b"N")
            continue
        server_writer.write(struct.pack("!ii", length, code) + rest)
        break
    while True:
        kind = await reader.readexactly(1)
        (length,) = struct.unpack("!i", await reader.readexactly(4))
        body = await reader.readexactly(length - 4)
        parser.message(kind, body)
        server_writer.write(kind + struct.pack("!i", length) + body)
        await server_writer.drain()


async def relay_server(server_reader, writer) -> None:
    while data := await server_reader.read(65536):
        writer.write(data)
        await writer.drain()


class CountingProxy:
    """The proxy, on its own thread and event loop: `with CountingProxy(host, port) as proxy: proxy.port`."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.log = StatementLog()
        self.ready = threading.Event()

    def __enter__(self) -> "CountingProxy":
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc_info) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(5)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        async with server:
            await self.stop.wait()

    async def _connection(self, reader, writer) -> None:
        self.log.connections += 1
        server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        directions = [
            asyncio.ensure_future(relay_client(reader, writer, server_writer, ClientSide(self.log))),
            asyncio.ensure_future(relay_server(server_reader, writer)),
        ]
        try:
            await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # the proxy stops with this connection open: end it quietly (asyncio.streams logs a
            # cancelled handler's CancelledError as "Exception in callback")
        finally:
            for task in directions:
                task.cancel()
            await asyncio.gather(*directions, return_exceptions=True)
            writer.close()
            server_writer.close()


EMPTY = "(empty)"  # an empty query: psycopg_pool's check of a connection it hands out


def summarise(statements: list[str], round_trips: int, streams: int) -> dict:
    """Statements and round trips per stream, and one stream's statements by kind (`SELECT`, `BEGIN` …,
    `(empty)`)."""
    kinds = Counter(statement.split(" ", 1)[0].upper() or EMPTY for statement in statements)
    return {
        "per_stream": len(statements) / streams,
        "round_trips_per_stream": round_trips / streams,
        "kinds_per_stream": {kind: count / streams for kind, count in kinds.most_common()},
    }
