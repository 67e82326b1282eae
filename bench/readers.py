"""R's load generator: answers started on one server, each read at once on another server through Redis.

Run as its own process (`python -m bench.readers '<json job>'`, pinned to the client's core); it prints
one JSON object of results on stdout. A job is:

    {"owner_port": 8000, "reader_port": 8001, "token": "...", "answers": 200, "remote_readers": 4,
     "chunks": 20, "delay_ms": 100, "spread_ms": 1000, "timeout": 120}

Each answer is a `POST /api/ai/chat/stream` on the owner server (its local reader, the first of the
answer's readers); once its `start` event arrived, `remote_readers` readers `GET
/api/ai/chat/stream/<message_id>` on the other server (no `Last-Event-ID`: from id 1), which reaches the
owner through the channels layer. The answers start spread over `spread_ms`. Every event is recorded
with its receive time, and checked:

- every reader's ids are 1, 2, 3 … to a `done`, with no gap and no duplicate, and each remote reader's
  events are the local reader's, `data` byte for byte (any difference is a violation, listed);
- lag: for each event a remote reader received live (after its response began, not as its backlog),
  its receive time minus the local reader's for the same id;
- steady lag: the same, of the events the local readers received while the load was whole — after the
  last remote reader's response began, before the first answer ended: every answer running with all its
  readers, no reader attaching (the lag above includes the attach storm, when the answers start and
  their readers attach; `spread_ms` plus the attach time, which `chunks` must outlast);
- attach: how long a remote reader waited for its response to begin (the server's first pull done).
"""

import asyncio
import json
import resource
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.client import (
    PATHS,
    body_pieces,
    http_request,
    main,
    percentile,
    read_head,
)

CONNECTION_ERRORS = (OSError, asyncio.IncompleteReadError, ValueError)


@dataclass
class Reading:
    """One reader's events as `(id, data bytes, receive time)`, and when it asked and its response began."""

    asked: float | None = None
    began: float | None = None
    events: list[tuple[int | None, bytes, float]] = field(default_factory=list)
    failure: str | None = None
    buffer: bytes = b""

    def feed(self, data: bytes, now: float) -> None:
        self.buffer += data
        *frames, self.buffer = self.buffer.split(b"\n\n")
        for frame in frames:
            event_id = payload = None
            for line in frame.split(b"\n"):
                if line.startswith(b"id: "):
                    event_id = int(line[4:])
                elif line.startswith(b"data: "):
                    payload = line[6:]
            if payload is not None:  # a keep-alive comment has none
                self.events.append((event_id, payload, now))

    @property
    def chunks(self) -> int:
        return sum(b'"type":"chunk"' in payload for _, payload, _ in self.events)


async def read_stream(port: int, request: bytes, reading: Reading, on_event=None) -> None:
    """Send `request` on a connection of its own and record its stream's events in `reading`."""
    writer = None
    try:
        reading.asked = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        status, headers = await read_head(reader)
        reading.began = time.perf_counter()
        if status != 200:
            reading.failure = f"http_{status}"
            return
        async for piece in body_pieces(reader, headers):
            reading.feed(piece, time.perf_counter())
            if on_event is not None and reading.events:
                on_event(reading)
    except CONNECTION_ERRORS as error:
        reading.failure = type(error).__name__
    finally:
        if writer is not None:
            writer.close()


@dataclass
class Answer:
    """One answer's readers: the local one (the POST) and the remote ones (GETs on the other server)."""

    local: Reading = field(default_factory=Reading)
    remote: list[Reading] = field(default_factory=list)
    remote_tasks: list[asyncio.Task] = field(default_factory=list)


async def one_answer(job: dict, index: int, answer: Answer) -> None:
    await asyncio.sleep(job["spread_ms"] / 1000 * index / job["answers"])
    message = f"Benchmark question. [mock:chunks={job['chunks']}] [mock:delay_ms={job['delay_ms']}]"
    post = http_request(
        "POST",
        PATHS["sse"],
        port=job["owner_port"],
        token=job["token"],
        body={"message": message},
        close=True,
    )

    def start_remote_readers(local: Reading) -> None:
        if answer.remote_tasks:
            return
        message_id = json.loads(local.events[0][1])["message_id"]
        get = http_request(
            "GET", f"{PATHS['sse']}/{message_id}", port=job["reader_port"], token=job["token"], close=True
        )
        for _ in range(job["remote_readers"]):
            answer.remote.append(Reading())
            answer.remote_tasks.append(
                asyncio.create_task(read_stream(job["reader_port"], get, answer.remote[-1]))
            )

    await read_stream(job["owner_port"], post, answer.local, on_event=start_remote_readers)
    await asyncio.gather(*answer.remote_tasks)


def check(answer: Answer, job: dict) -> list[str]:
    """What is wrong with one answer's readers (nothing: an empty list)."""
    local = answer.local
    if local.failure:
        return [f"local reader failed: {local.failure}"]
    ids = [event_id for event_id, _, _ in local.events]
    problems = []
    if ids != list(range(1, len(ids) + 1)):
        problems.append(f"local reader's ids are not 1…n: {ids}")
    if not ids or b'"type":"done"' not in local.events[-1][1]:
        problems.append("local reader did not end with done")
    elif local.chunks != job["chunks"]:
        problems.append(f"local reader got {local.chunks} chunks, not {job['chunks']}")
    if len(answer.remote) != job["remote_readers"]:
        problems.append(f"{len(answer.remote)} remote readers started, not {job['remote_readers']}")
    expected = [(event_id, payload) for event_id, payload, _ in local.events]
    for number, remote in enumerate(answer.remote, 1):
        if remote.failure:
            problems.append(f"remote reader {number} failed: {remote.failure}")
            continue
        got = [(event_id, payload) for event_id, payload, _ in remote.events]
        if got != expected:
            problems.append(
                f"remote reader {number} differs from the local one: {_difference(expected, got)}"
            )
    return problems


def _difference(expected: list, got: list) -> str:
    ids = [event_id for event_id, _ in got]
    if len(set(ids)) != len(ids):
        return f"duplicate ids in {ids}"
    for position, (wanted, seen) in enumerate(zip(expected, got, strict=False)):
        if wanted != seen:
            return f"event {position + 1}: {seen!r} instead of {wanted!r}"
    return f"{len(got)} events instead of {len(expected)} (ids {ids})"


def lags_ms(answer: Answer, since: float = 0.0, until: float = float("inf")) -> list[float]:
    """Each remote reader's live events (those the local reader received between `since` and `until`):
    how long after the local reader it received each."""
    local_at = {event_id: at for event_id, _, at in answer.local.events}
    lags = []
    for remote in answer.remote:
        if remote.began is None:
            continue
        for event_id, _, at in remote.events:
            if event_id in local_at and max(remote.began, since) <= local_at[event_id] <= until:
                lags.append((at - local_at[event_id]) * 1000)
    return lags


def steady_window(answers: list[Answer]) -> tuple[float, float]:
    """When the whole load ran: from the last remote reader's response to the first answer's end
    (empty, `since` > `until`, when an answer ended before every reader had attached)."""
    since = max((r.began for a in answers for r in a.remote if r.began is not None), default=float("inf"))
    until = min((a.local.events[-1][2] for a in answers if a.local.events), default=float("-inf"))
    return since, until


async def run(job: dict) -> dict:
    answers = [Answer() for _ in range(job["answers"])]
    started = time.perf_counter()
    tasks = [asyncio.create_task(one_answer(job, index, answer)) for index, answer in enumerate(answers)]
    _, pending = await asyncio.wait(tasks, timeout=job["timeout"])
    for task in pending:
        task.cancel()
    for answer in answers:
        for task in answer.remote_tasks:
            task.cancel()
    wall = time.perf_counter() - started
    problems = []
    for number, answer in enumerate(answers, 1):
        problems += [f"answer {number}: {problem}" for problem in check(answer, job)]
    if pending:
        problems.append(f"{len(pending)} answers still running after {job['timeout']} s")
    lags = [lag for answer in answers for lag in lags_ms(answer)]
    since, until = steady_window(answers)
    steady = [lag for answer in answers for lag in lags_ms(answer, since, until)]
    readings = [reading for answer in answers for reading in (answer.local, *answer.remote)]
    remote = [reading for answer in answers for reading in answer.remote if reading.began is not None]
    attach = [(reading.began - reading.asked) * 1000 for reading in remote]
    chunks = sum(reading.chunks for reading in readings)
    return {
        "answers": len(answers),
        "readers": len(readings),
        "readers_failed": dict(Counter(reading.failure for reading in readings if reading.failure)),
        "chunks_delivered": chunks,
        "wall_s": wall,
        "chunks_per_s": chunks / wall,
        "lag_samples": len(lags),
        "lag_p50_ms": percentile(lags, 0.50),
        "lag_p99_ms": percentile(lags, 0.99),
        "lag_max_ms": max(lags, default=None),
        "steady_s": max(0.0, until - since),
        "steady_lag_samples": len(steady),
        "steady_lag_p50_ms": percentile(steady, 0.50),
        "steady_lag_p99_ms": percentile(steady, 0.99),
        "attach_p50_ms": percentile(attach, 0.50),
        "attach_p99_ms": percentile(attach, 0.99),
        "violations": len(problems),
        "violation_examples": problems[:10],
        "client_cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
    }


if __name__ == "__main__":
    main(run)
