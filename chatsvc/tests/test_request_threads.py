"""The requests' threads of the ASGI entry point (chatsvc.request_threads): each request's thread-sensitive
work on one thread of its own, that thread kept for a next request, and none left beyond the idle cap."""

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async

from chatsvc import request_threads

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Recorder:
    """An ASGI app whose request runs two thread-sensitive calls (`hold` between them, while set)."""

    def __init__(self) -> None:
        self.threads: list[tuple[threading.Thread, threading.Thread]] = []
        self.began: list[threading.Thread] = []  # every request's first thread, a failed one's too
        self.hold: asyncio.Event | None = None

    async def __call__(self, scope, receive, send) -> None:
        first = await sync_to_async(threading.current_thread)()
        self.began.append(first)
        if self.hold is not None:
            await self.hold.wait()
        if scope.get("fail"):
            raise RuntimeError("the request failed")
        self.threads.append((first, await sync_to_async(threading.current_thread)()))


def threads_of_requests() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("request")}


async def eventually(condition) -> None:
    """Wait up to 2 s for `condition()` to hold (a thread starts or exits on its own time)."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)


async def test_a_request_keeps_one_thread_and_leaves_it_to_the_next():
    recorder = Recorder()
    application = request_threads.RequestThreads(recorder)
    await application({}, None, None)
    await application({}, None, None)
    (first, second), (third, fourth) = recorder.threads
    assert first is second is third is fourth
    assert first is not threading.current_thread()


async def test_requests_at_once_each_have_a_thread_and_no_more_than_the_cap_stay(monkeypatch):
    monkeypatch.setattr(request_threads, "IDLE_REQUEST_THREADS", 3)
    recorder = Recorder()
    recorder.hold = asyncio.Event()
    application = request_threads.RequestThreads(recorder)
    before = threads_of_requests()
    requests = [asyncio.ensure_future(application({}, None, None)) for _ in range(8)]
    await eventually(lambda: len(threads_of_requests() - before) == 8)
    recorder.hold.set()
    await asyncio.gather(*requests)
    assert all(first is second for first, second in recorder.threads)
    assert len({first for first, _ in recorder.threads}) == 8
    await eventually(lambda: len(threads_of_requests()) <= len(before) + 3)
    assert len(threads_of_requests() - before) == 3


async def test_a_failed_request_does_not_lend_its_thread():
    recorder = Recorder()
    application = request_threads.RequestThreads(recorder)
    with pytest.raises(RuntimeError):
        await application({"fail": True}, None, None)
    await application({}, None, None)
    await application({}, None, None)
    failed, first, second = recorder.began
    assert first is second is not failed
    await eventually(lambda: not failed.is_alive())
    assert not failed.is_alive()
