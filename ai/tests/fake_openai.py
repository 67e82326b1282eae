"""`FakeOpenAI`: a local OpenAI-compatible chat completions server for tests, steered by `[fake:…]`.

It speaks the real wire format: `POST /v1/chat/completions` with `"stream": true` answers
`text/event-stream` (chunked), a `data: {chat.completion.chunk}` frame per piece, a final usage chunk when
`stream_options.include_usage` is set, then `data: [DONE]`. It runs in a thread of the test process on
127.0.0.1, so a server process started by a test (daphne) can reach it too, through `base_url`.

Directives, read from the last user message of each request (several may be combined):
  `[fake:status=N]`        answer HTTP N with an OpenAI-style JSON error (whose message holds the API key
                           it was sent, so tests can prove it never reaches a user)
  `[fake:chunks=N]`        N content pieces (default 5): "Hello", " world1", " world2", …
  `[fake:delay_ms=D]`      D ms before each piece
  `[fake:slow=S]`          S seconds of silence before the first piece (the headers are sent at once)
  `[fake:slow_headers=S]`  S seconds of silence before the response headers
  `[fake:break_after=K]`   K pieces, then the connection is dropped (no end of body, no [DONE])
  `[fake:hang_after=K]`    K pieces, then silence until the client hangs up
  `[fake:end_after=K]`     K pieces, then a clean end of the body without finish_reason or [DONE]
  `[fake:garbage_after=K]` K pieces, then a frame that is not JSON
  `[fake:finish=length]`   the finish_reason sent (default "stop")
  `[fake:no_usage]`        no usage chunk, even when asked for one
Usage sent: prompt_tokens = whitespace-separated words of all contents, completion_tokens = pieces sent.
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_CHUNKS = 5
DIRECTIVE = re.compile(r"\[fake:(\w+)(?:=([\w.]+))?\]")


def fake_pieces(count: int = DEFAULT_CHUNKS) -> list[str]:
    """The content pieces the fake sends for `[fake:chunks=count]`."""
    return ["Hello"] + [f" world{index}" for index in range(1, count)]


@dataclass
class RecordedRequest:
    """One request the fake received, and what became of its answer."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any
    client_port: int  # the client's side of the TCP connection: equal ports mean a reused connection
    pieces_sent: int = 0
    completed: threading.Event = field(default_factory=threading.Event)  # the whole answer was sent
    disconnected: threading.Event = field(default_factory=threading.Event)  # the client hung up mid-answer
    disconnected_at: float | None = None  # time.monotonic()

    @property
    def directives(self) -> dict[str, str]:
        messages = self.body.get("messages", []) if isinstance(self.body, dict) else []
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        last = users[-1] if users and isinstance(users[-1], str) else ""
        return {name: value for name, value in DIRECTIVE.findall(last)}


class ClientGone(Exception):
    """The client closed the connection while the fake was answering."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `FakeOpenAI.requests` instead."""

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        record = RecordedRequest(
            method="POST",
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            client_port=self.client_address[1],
        )
        self.server.fake._record(record)
        try:
            self._answer(record)
        except (ClientGone, BrokenPipeError, ConnectionResetError):
            record.disconnected_at = time.monotonic()
            record.disconnected.set()
            self.close_connection = True

    def _answer(self, record: RecordedRequest) -> None:
        directives = record.directives
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(404, "Unknown path.", record)
        if not isinstance(record.body, dict) or record.body.get("stream") is not True:
            return self._error(400, "The fake answers only streamed chat completions.", record)
        if "status" in directives:
            return self._error(int(directives["status"]), "The fake was asked to fail.", record)
        self._wait(float(directives.get("slow_headers", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Request-Id", f"req_fake_{id(record)}")
        self.end_headers()
        self._stream(record, directives)

    def _stream(self, record: RecordedRequest, directives: dict[str, str]) -> None:
        body = record.body
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time())}
        base["model"] = body.get("model")

        def frame(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> None:
            chunk = {**base, "choices": choices, **({"usage": usage} if include_usage else {})}
            self._send(f"data: {json.dumps(chunk)}\n\n".encode())

        def delta(content: str | None, finish_reason: str | None = None, **extra: str) -> dict[str, Any]:
            return {"index": 0, "delta": {**extra, "content": content}, "finish_reason": finish_reason}

        pieces = fake_pieces(int(directives.get("chunks", DEFAULT_CHUNKS)))
        delay = int(directives.get("delay_ms", 0)) / 1000
        frame([delta("", role="assistant")])
        for index in range(len(pieces) + 1):
            if str(index) == directives.get("break_after"):
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if str(index) == directives.get("hang_after"):
                self._wait(None)
            if str(index) == directives.get("end_after"):
                return self._send(b"")
            if str(index) == directives.get("garbage_after"):
                self._send(b"data: {this is not json\n\n")
                return self._send(b"")
            if index == len(pieces):
                break
            self._wait(float(directives.get("slow", 0)) if index == 0 else 0)
            self._wait(delay)
            frame([delta(pieces[index])])
            record.pieces_sent += 1
        frame([delta(None, directives.get("finish", "stop"))])
        if include_usage and "no_usage" not in directives:
            prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
            sent = record.pieces_sent
            frame([], {"prompt_tokens": prompt, "completion_tokens": sent, "total_tokens": prompt + sent})
        self._send(b"data: [DONE]\n\n")
        self._send(b"")
        record.completed.set()

    def _error(self, status: int, reason: str, record: RecordedRequest) -> None:
        key = record.headers.get("authorization", "").removeprefix("Bearer ")
        error = {
            "message": f"{reason} Incorrect API key provided: {key}.",
            "type": "fake_error",
            "code": status,
        }
        payload = json.dumps({"error": error}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Request-Id", f"req_fake_{id(record)}")
        self.end_headers()
        self.wfile.write(payload)
        record.completed.set()

    def _send(self, data: bytes) -> None:
        """One HTTP chunk (an empty one ends the body)."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _wait(self, seconds: float | None) -> None:
        """Sleep `seconds` (None: until the client leaves), raising `ClientGone` as soon as it does."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            if self.server.stopping.is_set():
                raise ClientGone
            step = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            readable, _, _ = select.select([self.connection], [], [], max(step, 0))
            if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                raise ClientGone


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, fake: FakeOpenAI, address: tuple[str, int]) -> None:
        self.fake = fake
        self.stopping = threading.Event()
        super().__init__(address, _Handler)


class FakeOpenAI:
    """The server: `start()`/`stop()` (or `with`), `base_url`, and what it saw in `requests`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server(self, (host, port))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._requests: list[RecordedRequest] = []
        self._arrived = threading.Condition()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._arrived:
            return list(self._requests)

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def clear(self) -> None:
        """Forget the requests seen so far."""
        with self._arrived:
            self._requests.clear()

    def wait_for_request(self, timeout: float = 5.0) -> RecordedRequest | None:
        """The latest request, waiting up to `timeout` seconds for a first one."""
        with self._arrived:
            self._arrived.wait_for(lambda: self._requests, timeout)
            return self._requests[-1] if self._requests else None

    def wait_for_disconnect(self, timeout: float = 5.0) -> bool:
        """Whether the client of the latest request hung up mid-answer within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        record = self.wait_for_request(timeout)
        return record is not None and record.disconnected.wait(max(0.0, deadline - time.monotonic()))

    def _record(self, record: RecordedRequest) -> None:
        with self._arrived:
            self._requests.append(record)
            self._arrived.notify_all()
