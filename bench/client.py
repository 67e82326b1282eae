"""The load generator: a lightweight asyncio HTTP/1.1 client that reads the chat stream's SSE frames.

Run as its own process (`python -m bench.client '<json job>'`, pinned to the other core by the caller);
it prints one JSON object of results on stdout. A job is:

    {"port": 8000, "token": "...", "streams": 2000, "concurrency": 50, "chunks": 20, "delay_ms": 0,
     "burst": false, "spread_ms": 0, "max_seconds": null, "timeout": 120, "encoding": "sse"}

- `encoding` "sse": the contract's stream (`POST /api/ai/chat/stream`); "ui": the AI SDK's UI message
  stream (`POST /api/ai/chat`, a new chat each time);

- closed loop (`burst` false): `concurrency` workers, each on one keep-alive connection, send stream
  after stream until `streams` have been sent; time to first chunk counts from the request's first byte.
  With `spread_ms`, the workers start spread over that time and pause up to a tenth of it (at random)
  between streams, so streams of equal length do not stay in step and arrive together. With
  `max_seconds`, no stream is started after that time (fewer than `streams` may be sent);
- burst (`burst` true): `streams` streams all started at once, each on its own connection
  (`Connection: close`); time to first chunk counts from the burst's start, connecting included.

A stream completes when it answers 200, sends exactly `chunks` chunk events (`text-delta` in the UI
stream), then `done` (`finish`).
"""

import asyncio
import json
import random
import resource
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

PATHS = {"sse": "/api/ai/chat/stream", "ui": "/api/ai/chat"}
CHUNK_TYPES = {"chunk", "text-delta"}  # the contract's and the UI message stream's
DONE_TYPES = {"done", "finish"}
END_TYPES = {*DONE_TYPES, "error", "abort"}


class StreamFailed(Exception):
    """The stream did not end with `done` after the expected chunks; the message is the reason."""


@dataclass
class Results:
    """What every stream of a job measured."""

    started: int = 0
    completed: int = 0
    failures: Counter = field(default_factory=Counter)
    first_chunk_ms: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    open_now: int = 0
    open_peak: int = 0

    def opened(self) -> None:
        self.open_now += 1
        self.open_peak = max(self.open_peak, self.open_now)


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (`fraction` 0.5 for p50), or None without values."""
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def request_bytes(job: dict) -> bytes:
    """One stream's request (each its own: a UI message stream starts a new chat every time)."""
    message = f"Benchmark question. [mock:chunks={job['chunks']}] [mock:delay_ms={job['delay_ms']}]"
    encoding = job.get("encoding", "sse")
    if encoding == "ui":
        user_message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": message}]}
        body = {"id": f"bench-{uuid.uuid4().hex}", "messages": [user_message], "trigger": "submit-message"}
    else:
        body = {"message": message}
    return http_request(
        "POST", PATHS[encoding], port=job["port"], token=job["token"], body=body, close=job["burst"]
    )


def http_request(method: str, path: str, *, port: int, token: str, body=None, close: bool) -> bytes:
    """An HTTP/1.1 request of the bench user (`body`: sent as JSON)."""
    payload = b"" if body is None else json.dumps(body).encode()
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Authorization: Token {token}"]
    head += ["Accept: text/event-stream", f"Connection: {'close' if close else 'keep-alive'}"]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status code and the (lower-cased) headers of a response."""
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def body_pieces(reader: asyncio.StreamReader, headers: dict[str, str]):
    """The response body as it arrives: de-chunked, or by Content-Length, or up to the close."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers are sent: the empty line ends the body
                return
            piece = await reader.readexactly(size + 2)
            yield piece[:-2]
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while piece := await reader.read(65536):
            yield piece


class StreamReading:
    """Parses one stream's SSE frames and times its chunk events."""

    def __init__(self, started: float):
        self.started = started
        self.buffer = b""
        self.chunks = 0
        self.end: str | None = None
        self.first_chunk_ms: float | None = None
        self.last_chunk_at: float | None = None
        self.gaps_ms: list[float] = []

    def feed(self, data: bytes) -> None:
        self.buffer += data
        *frames, self.buffer = self.buffer.split(b"\n\n")
        now = time.perf_counter()
        for frame in frames:
            for line in frame.split(b"\n"):
                if line.startswith(b"data:") and line != b"data: [DONE]":  # the UI stream's last line
                    self.event(json.loads(line[5:]), now)

    def event(self, data: dict, now: float) -> None:
        kind = data.get("type")
        if self.end is not None:
            raise StreamFailed(f"event after {self.end}")
        if kind in CHUNK_TYPES:
            self.chunks += 1
            if self.last_chunk_at is None:
                self.first_chunk_ms = (now - self.started) * 1000
            else:
                self.gaps_ms.append((now - self.last_chunk_at) * 1000)
            self.last_chunk_at = now
        elif kind in DONE_TYPES:
            self.end = "done"
        elif kind in END_TYPES:
            self.end = f"{kind}:{data.get('code')}"


async def one_stream(reader, writer, request: bytes, started: float, job: dict, results: Results) -> bool:
    """Send one request and read its stream; record it. True when the connection may be reused."""
    writer.write(request)
    status, headers = await read_head(reader)
    reading = StreamReading(started)
    if status == 200:
        results.opened()
    try:
        async for piece in body_pieces(reader, headers):
            if status == 200:
                reading.feed(piece)
    finally:
        if status == 200:
            results.open_now -= 1
    if status != 200:
        raise StreamFailed(f"http_{status}")
    if reading.end != "done":
        raise StreamFailed(reading.end or "no_end_event")
    if reading.chunks != job["chunks"]:
        raise StreamFailed("wrong_chunk_count")
    results.completed += 1
    results.first_chunk_ms.append(reading.first_chunk_ms)
    results.gaps_ms.extend(reading.gaps_ms)
    return headers.get("connection", "").lower() != "close"


async def closed_loop_worker(job: dict, remaining: list[int], results: Results, *, index: int) -> None:
    """Stream after stream on one keep-alive connection (re-opened when the server closes it)."""
    spread = job.get("spread_ms", 0) / 1000
    await asyncio.sleep(spread * index / job["concurrency"])
    deadline = time.perf_counter() + (job.get("max_seconds") or float("inf"))
    reader = writer = None
    while remaining[0] > 0 and time.perf_counter() < deadline:
        remaining[0] -= 1
        if spread and writer is not None:
            await asyncio.sleep(random.uniform(0, spread / 10))
        results.started += 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", job["port"])
            if not await one_stream(reader, writer, request_bytes(job), time.perf_counter(), job, results):
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, StreamFailed, ValueError) as error:
            results.failures[_reason(error)] += 1
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def burst_stream(job: dict, request: bytes, started: float, results: Results) -> None:
    """One stream of the burst on its own connection, timed from the burst's start."""
    writer = None
    results.started += 1
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", job["port"])
        await one_stream(reader, writer, request, started, job, results)
    except (OSError, asyncio.IncompleteReadError, StreamFailed, ValueError) as error:
        results.failures[_reason(error)] += 1
    finally:
        if writer is not None:
            writer.close()


def _reason(error: Exception) -> str:
    return str(error) if isinstance(error, StreamFailed) else type(error).__name__


async def run(job: dict) -> dict:
    results = Results()
    if job["burst"]:
        requests = [request_bytes(job) for _ in range(job["streams"])]
        started = time.perf_counter()
        tasks = [burst_stream(job, request, started, results) for request in requests]
    else:
        remaining = [job["streams"]]
        started = time.perf_counter()
        tasks = [
            closed_loop_worker(job, remaining, results, index=index) for index in range(job["concurrency"])
        ]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=job["timeout"])
    except TimeoutError:
        results.failures["timeout"] += results.started - results.completed - sum(results.failures.values())
    wall = time.perf_counter() - started
    return summary(results, wall)


def summary(results: Results, wall: float) -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "completed": results.completed,
        "failures": dict(results.failures),
        "wall_s": wall,
        "streams_per_s": results.completed / wall if wall else 0.0,
        "first_chunk_p50_ms": percentile(results.first_chunk_ms, 0.50),
        "first_chunk_p99_ms": percentile(results.first_chunk_ms, 0.99),
        "gap_p50_ms": percentile(results.gaps_ms, 0.50),
        "gap_p99_ms": percentile(results.gaps_ms, 0.99),
        "open_peak": results.open_peak,
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
    }


def raise_open_files_limit() -> None:
    """A burst of 1,000 connections needs more descriptors than the usual soft limit of 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(run_job=run) -> None:
    """Run the job given as the first argument with `run_job` (a load generator's); print its results."""
    job = json.loads(sys.argv[1])
    raise_open_files_limit()
    print(json.dumps(asyncio.run(run_job(job))))


if __name__ == "__main__":
    main()
