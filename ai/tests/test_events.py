"""An answer's event log (ai.events.EventLog) as its readers see it: news, all at once, to the end."""

import asyncio
import time

from ai import sse
from ai.events import EventLog

CHUNK = {"type": "chunk", "content": "Hi"}
DONE = {"type": "done", "message_id": "m", "finish_reason": "stop", "usage": None, "quota": None}


def test_a_reader_that_comes_late_gets_what_it_missed_at_once_then_each_event_as_it_comes():
    async def scenario():
        log = EventLog()
        for _ in range(5):
            log.log(CHUNK)
        reader = log.read(0)
        backlog = await anext(reader)
        waiting = asyncio.ensure_future(anext(reader))
        await asyncio.sleep(0)
        log.log(CHUNK)
        live = await waiting
        log.log(DONE)
        rest = [news async for news in reader]
        return backlog, live, rest, log.readers

    backlog, live, rest, readers = asyncio.run(scenario())
    assert [event.id for event in backlog] == [1, 2, 3, 4, 5]
    assert [event.id for event in live] == [6]
    assert [[event.id for event in news] for news in rest] == [[7]]
    assert readers == 0


def test_the_end_logged_while_a_reader_is_away_still_reaches_it():
    async def scenario():
        log = EventLog()
        log.log(CHUNK)
        reader = log.read(0)
        first = await anext(reader)
        log.log(CHUNK)  # both logged before the reader asks again
        log.log(DONE)
        return first, [news async for news in reader]

    first, rest = asyncio.run(scenario())
    assert [event.id for event in first] == [1]
    assert [[event.id for event in news] for news in rest] == [[2, 3]]


def test_a_quiet_while_is_news_of_nothing(settings):
    settings.AI_STREAM_KEEPALIVE = 0.01

    async def scenario():
        log = EventLog()
        reader = log.read(0)
        quiet = await anext(reader)
        await reader.aclose()
        return quiet, log.readers

    assert asyncio.run(scenario()) == (None, 0)


def test_the_sse_stream_writes_each_piece_of_news_as_one_write_of_its_frames(settings):
    settings.AI_STREAM_KEEPALIVE = 0.01

    async def scenario():
        log = EventLog()
        for _ in range(3):
            log.log(CHUNK)
        frames = sse.frames(log.read(1))
        backlog = await anext(frames)
        keepalive = await anext(frames)
        log.log(DONE)
        return backlog, keepalive, [frame async for frame in frames]

    backlog, keepalive, rest = asyncio.run(scenario())
    chunk = b'data: {"type":"chunk","content":"Hi"}\n\n'
    assert backlog == b"id: 2\n" + chunk + b"id: 3\n" + chunk
    assert keepalive == sse.KEEPALIVE
    assert len(rest) == 1
    assert rest[0].startswith(b'id: 4\ndata: {"type":"done"')


def test_readers_waiting_share_one_quiet_timer_and_one_that_leaves_disturbs_none(settings):
    settings.AI_STREAM_KEEPALIVE = 0.05

    async def scenario():
        log = EventLog()
        log.log(CHUNK)
        readers = [log.read(1) for _ in range(3)]
        waits = [asyncio.ensure_future(anext(reader)) for reader in readers]
        await asyncio.sleep(0)
        timers = [log._quiet]
        waits[0].cancel()  # a reader that leaves while it waits
        quiet = await asyncio.gather(*waits[1:])
        log.log(DONE)
        rest = [[[event.id for event in news] async for news in reader] for reader in readers[1:]]
        await readers[0].aclose()
        return timers, quiet, rest, log._quiet, log.readers

    timers, quiet, rest, timer_after_the_end, readers = asyncio.run(scenario())
    assert timers[0] is not None
    assert quiet == [None, None]
    assert rest == [[[2]], [[2]]]
    assert timer_after_the_end is None
    assert readers == 0


def test_news_puts_the_quiet_while_off(settings):
    settings.AI_STREAM_KEEPALIVE = 0.2

    async def scenario():
        log = EventLog()
        reader = log.read(0)
        waiting = asyncio.ensure_future(anext(reader))
        await asyncio.sleep(0.1)
        log.log(CHUNK)
        news = await waiting
        logged = time.monotonic()
        quiet = await anext(reader)
        waited = time.monotonic() - logged
        await reader.aclose()
        return news, quiet, waited

    news, quiet, waited = asyncio.run(scenario())
    assert [event.id for event in news] == [1]
    assert quiet is None
    assert waited >= 0.19  # a keep-alive a quiet while after the last news, not after the first wait
