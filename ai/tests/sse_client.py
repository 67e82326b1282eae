"""A small SSE reader for the stream tests (httpx-sse is used beside it, as a second opinion)."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx


@dataclass
class Frame:
    """One SSE frame: an event (`id`, `data` parsed as JSON) or a comment."""

    id: str | None = None
    data: dict | None = None
    comment: str | None = None
    raw_lines: list[str] = field(default_factory=list)

    @property
    def type(self) -> str | None:
        return self.data["type"] if self.data else None


class FrameParser:
    """Feeds SSE lines one by one; `feed` returns each frame once its blank line arrives."""

    def __init__(self) -> None:
        self.frame, self.data_lines = Frame(), []

    def feed(self, line: str) -> Frame | None:
        if line == "":
            frame, data_lines = self.frame, self.data_lines
            self.frame, self.data_lines = Frame(), []
            if data_lines:
                frame.data = json.loads("\n".join(data_lines))
            return frame if frame.raw_lines else None
        self.frame.raw_lines.append(line)
        if line.startswith(":"):
            self.frame.comment = line[1:].strip()
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                self.frame.id = value
            elif name == "data":
                self.data_lines.append(value)
            else:
                raise AssertionError(f"unexpected SSE field {name!r} in {line!r}")
        return None


def iter_frames(response: httpx.Response) -> Iterator[Frame]:
    """The frames of an SSE body, as they arrive (a blank line ends each)."""
    parser = FrameParser()
    for line in response.iter_lines():
        if frame := parser.feed(line):
            yield frame


async def aiter_frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """`iter_frames` for an `httpx.AsyncClient`'s streaming response."""
    parser = FrameParser()
    async for line in response.aiter_lines():
        if frame := parser.feed(line):
            yield frame


def stream(client: httpx.Client, server_url: str, token: str, body: dict, **kwargs):
    """Open `POST /api/ai/chat/stream` as a streaming response (a context manager)."""
    return client.stream(
        "POST",
        f"{server_url}/api/ai/chat/stream",
        json=body,
        headers={"Authorization": f"Token {token}", **kwargs.pop("headers", {})},
        **kwargs,
    )


def events(client: httpx.Client, server_url: str, token: str, body: dict) -> list[Frame]:
    """The whole stream's event frames (comments left out), after checking it is a stream."""
    with stream(client, server_url, token, body) as response:
        assert response.status_code == 200, response.read()
        return [frame for frame in iter_frames(response) if frame.data is not None]


def wait_for(predicate, timeout: float = 10.0):
    """Poll `predicate` until it returns something truthy (the stream's end is written after the
    client has left, so tests of hang-ups wait for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


async def stream_all(url: str, token: str, bodies: list[dict]):
    """Fire every request at once; return (status, [event types]) per request."""
    limits = httpx.Limits(max_connections=len(bodies) + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(body):
            headers = {"Authorization": f"Token {token}"}
            async with client.stream(
                "POST", f"{url}/api/ai/chat/stream", json=body, headers=headers
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    return response.status_code, []
                types = []
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        types.append(json.loads(line[6:])["type"])
                return response.status_code, types

        return await asyncio.gather(*(one(body) for body in bodies))


def assert_json_error(response: httpx.Response, status: int, code: str) -> dict:
    """The contract's JSON error: the status, a `detail` and the machine `code`; returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert (body["code"], bool(body["detail"])) == (code, True), body
    return body


async def post_together(url: str, token: str, body: dict, *, count: int, headers=None):
    """Fire `count` copies of one request at once (one connection each); return per request its
    status and its event frames (a stream) or its JSON body (an error)."""
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    headers = {"Authorization": f"Token {token}", **(headers or {})}
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        release = asyncio.Event()

        async def one():
            await release.wait()
            async with client.stream(
                "POST", f"{url}/api/ai/chat/stream", json=body, headers=headers
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    return response.status_code, response.json()
                frames = [frame async for frame in aiter_frames(response) if frame.data is not None]
                return response.status_code, frames

        requests = [asyncio.ensure_future(one()) for _ in range(count)]
        await asyncio.sleep(0)  # every request waits at the gate
        release.set()
        return await asyncio.gather(*requests)
