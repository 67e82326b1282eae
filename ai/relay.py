"""Live answers across processes: this process's channel on the channels layer (Redis, `REDIS_URL`).

Each process listens on one channel of its own. The owner of an answer adds that channel to the
answer's group (`ai.answer.<message_id>`); a reader in another process asks the group for the events
after N and gets them in one batch (the owner waits a little when there is nothing new), then asks the
owner's channel directly. Pulled in batches, a slow reader never overflows a channel, and an owner that
does not answer within `AI_STREAM_OWNER_TIMEOUT` is noticed: its readers end with `error` `interrupted`.
A stop is one message to the same group, answered once the end is committed.

Without `REDIS_URL` there is no other process to reach: every call here is a no-op, nothing is sent.
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger("ai.relay")

RECONNECT_DELAY = 1.0  # seconds between two attempts to listen again after a layer failure


def enabled() -> bool:
    """Whether other processes can be reached (the channels layer is shared: `REDIS_URL`)."""
    return bool(settings.REDIS_URL)


def _group(answer_id: uuid.UUID) -> str:
    return f"ai.answer.{answer_id}"


class _Relay:
    """The process's channel: its listener task, and the requests of this process waiting for replies."""

    def __init__(self) -> None:
        self.layer = None
        self.channel: str | None = None
        self._listener: asyncio.Task | None = None
        self._ready: asyncio.Future | None = None
        self._replies: dict[str, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()  # answers to pulls and stops being sent

    async def ready(self) -> str:
        """This process's channel name, listening (started at first use)."""
        if self._ready is None:
            self.layer = get_channel_layer()
            self._ready = asyncio.get_running_loop().create_future()
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        return await asyncio.shield(self._ready)

    async def _listen(self) -> None:
        self.channel = await self.layer.new_channel()
        self._ready.set_result(self.channel)
        lost = False
        while True:
            try:
                if lost:
                    await self._rejoin()
                    lost = False
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("channel layer failed; listening again", exc_info=True)
                lost = True
                await asyncio.sleep(RECONNECT_DELAY)
                continue
            handler = getattr(self, "on_" + message.get("type", "").replace(".", "_"), None)
            if handler is not None:
                handler(message)

    async def _rejoin(self) -> None:
        """Join again the groups of the answers this process keeps: a restarted Redis forgot them."""
        from ai.generations import kept

        for answer_id in kept():
            await self.layer.group_add(_group(answer_id), self.channel)

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the owner's side: answering pulls and stops --------------------------------------------
    def on_answer_pull(self, message: dict) -> None:
        self._spawn(self._answer_pull(message))

    def on_answer_stop(self, message: dict) -> None:
        self._spawn(self._answer_stop(message))

    async def _answer_pull(self, message: dict) -> None:
        from ai.generations import local

        generation = local(message["answer_id"])
        reply = {"type": "answer.reply", "request_id": message["request_id"], "owner": self.channel}
        if generation is None:
            reply["found"] = False
        else:
            events = await generation.wait_after(message["after"], wait=message["wait"])
            events_data = [[event.id, event.data] for event in events]
            reply.update(found=True, events=events_data, ended=generation.ended.is_set())
        await self._send(message["reply_to"], reply)

    async def _answer_stop(self, message: dict) -> None:
        from ai.generations import local

        generation = local(message["answer_id"])
        if generation is not None:
            await generation.stop()
        reply = {"type": "answer.reply", "request_id": message["request_id"], "found": generation is not None}
        await self._send(message["reply_to"], reply)

    async def _send(self, channel: str, message: dict) -> None:
        try:
            await self.layer.send(channel, message)
        except Exception:
            logger.warning("channel layer send failed", exc_info=True)

    # --- the reader's side: asking the owner ----------------------------------------------------
    def on_answer_reply(self, message: dict) -> None:
        waiter = self._replies.pop(message["request_id"], None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    async def ask(
        self, answer_id: uuid.UUID, message: dict, *, to: str | None, patience: float
    ) -> dict | None:
        """Send `message` to the answer's owner (its group, or its channel `to`) and wait for the reply;
        None when none came within `patience` seconds (or the layer failed)."""
        request_id = uuid.uuid4().hex
        waiter = asyncio.get_running_loop().create_future()
        self._replies[request_id] = waiter
        try:
            message = {
                **message,
                "answer_id": str(answer_id),
                "request_id": request_id,
                "reply_to": await self.ready(),
            }
            if to is None:
                await self.layer.group_send(_group(answer_id), message)
            else:
                await self.layer.send(to, message)
            return await asyncio.wait_for(waiter, patience)
        except (TimeoutError, OSError, ConnectionError):
            return None
        except Exception:
            logger.warning("channel layer request failed", exc_info=True)
            return None
        finally:
            self._replies.pop(request_id, None)

    async def close(self) -> None:
        tasks = [task for task in (self._listener, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._listener = self._ready = None


_relay = _Relay()


def owner_joined(answer_id: uuid.UUID) -> None:
    """Make this process reachable as the answer's owner (in the background: the answer goes on)."""
    if enabled():
        _relay._spawn(_membership("add", answer_id))


def owner_left(answer_id: uuid.UUID) -> None:
    """The answer's log is freed: other processes can no longer read it here."""
    if enabled():
        _relay._spawn(_membership("discard", answer_id))


async def _membership(action: str, answer_id: uuid.UUID) -> None:
    try:
        channel = await _relay.ready()
        method = _relay.layer.group_add if action == "add" else _relay.layer.group_discard
        await method(_group(answer_id), channel)
    except Exception:
        logger.warning("channel layer group_%s failed for answer %s", action, answer_id, exc_info=True)


async def open_remote(answer_id: uuid.UUID, *, after: int) -> AsyncIterator | None:
    """The answer's events after `after` from the process that owns it; None when no process does."""
    if not enabled():
        return None
    reply = await _pull(answer_id, after=after, to=None, wait=0)
    if reply is None or not reply.get("found"):
        return None
    return _remote_events(answer_id, after, reply)


async def _pull(answer_id: uuid.UUID, *, after: int, to: str | None, wait: float) -> dict | None:
    message = {"type": "answer.pull", "after": after, "wait": wait}
    return await _relay.ask(answer_id, message, to=to, patience=wait + settings.AI_STREAM_OWNER_TIMEOUT)


async def _remote_events(answer_id: uuid.UUID, after: int, reply: dict):
    from ai.generations import INTERRUPTED, Event, _error_data

    owner = reply["owner"]
    wait = min(settings.AI_STREAM_KEEPALIVE, settings.AI_STREAM_OWNER_TIMEOUT / 2)
    while True:
        if reply is None or not reply.get("found"):
            yield Event(after + 1, _error_data(INTERRUPTED, str(answer_id)))
            return
        if not reply["events"]:
            if reply["ended"]:
                return  # read from its last event on: nothing more will come
            yield None  # nothing new for a while: the transport sends a keep-alive
        for event_id, data in reply["events"]:
            event = Event(event_id, data)
            after = event_id
            yield event
            if event.ends:
                return
        reply = await _pull(answer_id, after=after, to=owner, wait=wait)


async def stop_remote(answer_id: uuid.UUID) -> bool:
    """Stop the answer in the process that owns it; True once its end is committed there."""
    if not enabled():
        return False
    reply = await _relay.ask(
        answer_id, {"type": "answer.stop"}, to=None, patience=settings.AI_STREAM_OWNER_TIMEOUT
    )
    return bool(reply and reply.get("found"))


async def close() -> None:
    """Stop listening (the process is stopping)."""
    await _relay.close()
