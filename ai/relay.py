"""Live answers across processes: this process's channel on the channels layer (Redis, `REDIS_URL`).

Each process listens on one channel of its own. The owner of an answer adds that channel to the
answer's group (`ai.answer.<message_id>`). A process whose clients read an answer of another keeps one
copy of its log (a `Mirror`), shared by all its readers of that answer: it asks the group for the
events so far (again, at growing intervals, until the owner answers: the owner may join its group
late), then follows the owner. Following is pulled in batches — one request per owner process
for every answer followed there, answered once some of them have news (after a short window that
gathers more), or after a quiet while; an answer begun meanwhile joins the pending pull at the owner
(`answers.add`), so no news is ever sent twice — a slow reader never overflows a channel, thousands of
readers cost a few round trips a second, and an owner that does not answer within
`AI_STREAM_OWNER_TIMEOUT` is noticed: its answers' readers end with `error` `interrupted`. A stop is a
message to the answer's group (sent again the same way), answered once the end is committed.

Without `REDIS_URL` there is no other process to reach: every call here is a no-op, nothing is sent.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import RedisError

from ai.events import INTERRUPTED, EventLog, error_data

logger = logging.getLogger("ai.relay")

RECONNECT_DELAY = 1.0  # seconds before a failed subscription is tried again (doubling, up to…)
RECONNECT_DELAY_MAX = 30.0  # … this: channels_redis keeps a little of each failed attempt
BATCH_WINDOW = 0.005  # seconds an owner waits, once it has news for a follower, to send more at once
MIRROR_KEPT = 60.0  # seconds an ended answer's copy is kept for readers that never began
JOIN_WAIT = 1.0  # seconds an answer waits, at most, for its owner to join its group before it begins
LAYER = "relay"  # the alias of its channels layer in CHANNEL_LAYERS (no other code uses one)


def enabled() -> bool:
    """Whether other processes can be reached (the channels layer is shared: `REDIS_URL`)."""
    return bool(settings.REDIS_URL)


def _group(answer_id) -> str:
    return f"ai.answer.{answer_id}"


class Mirror(EventLog):
    """This process's copy of an answer another process owns, for every reader of it here."""

    def __init__(self, answer_id: uuid.UUID, owner: str) -> None:
        super().__init__()
        self.answer_id = answer_id
        self.owner = owner
        self.claims = 0  # readers handed out and not yet finished

    def extend(self, events: list) -> None:
        for event_id, data in events:
            if event_id == len(self.events) + 1 and not self.ended.is_set():
                self.log(data)

    def interrupt(self) -> None:
        """The owner stopped answering: the readers end with `error` `interrupted` (retryable)."""
        if not self.ended.is_set():
            self.log(error_data(INTERRUPTED, str(self.answer_id)))


class _Relay:
    """The process's channel: its listener, the answers it follows elsewhere, the requests waiting."""

    def __init__(self) -> None:
        self.layer = None
        self.channel: str | None = None
        self._listener: asyncio.Task | None = None
        self._ready: asyncio.Future | None = None
        self._contacts: dict[uuid.UUID, asyncio.Task] = {}  # first contacts under way, by answer
        self._replies: dict[str, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()  # answers to pulls and stops; followers
        self.mirrors: dict[uuid.UUID, Mirror] = {}
        self.followers: dict[str, _Follower] = {}  # by owner channel
        self._follows: dict[str, _Pull] = {}  # the pending follow of each follower, by its channel
        self.unreachable = False  # the last attempt to subscribe failed: Redis cannot be reached

    async def ready(self) -> str:
        """This process's channel name, listening (started at first use)."""
        if self._ready is None:
            self.layer = get_channel_layer(LAYER)
            self._ready = asyncio.get_running_loop().create_future()
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        return await asyncio.shield(self._ready)

    async def _listen(self) -> None:
        """Subscribe to this process's channel, then hand each message to its `on_…` handler. A Redis
        lost meanwhile is the layer's to reconnect to (redis-py's subscriber subscribes again to what
        it had subscribed to): its `receive` only waits longer."""
        self.channel = await retried(self.layer.new_channel, "subscribe to this process's channel")
        self._ready.set_result(self.channel)
        while True:
            try:
                message = await self.layer.receive(self.channel)
                handler = getattr(self, "on_" + message.get("type", "").replace(".", "_"), None)
                if handler is not None:
                    handler(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # a message it cannot read must not end the listening
                logger.exception("channel layer message dropped")

    async def call(self, name: str, *arguments) -> None:
        """The layer's `name` (send, group_send, group_add, group_discard): one PUBLISH or SUBSCRIBE at a
        time on the layer's connection, however many wait (a thousand answers starting, readers
        reattaching after a deploy); its callers have awaited `ready()` (they need the channel's name)."""
        await getattr(self.layer, name)(*arguments)

    def spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def send(self, to: str, message: dict, *, kind: str = "send") -> None:
        """The layer's `kind` of `message` to `to`, a failure logged."""
        try:
            await self.call(kind, to, message)
        except Exception:
            logger.warning("channel layer send failed", exc_info=True)

    # --- the owner's side: first contacts, follows and stops --------------------------------------
    def on_answer_pull(self, message: dict) -> None:
        """A first contact: the answer's events so far, at once."""
        from ai.generations import local

        generation = local(message["answer_id"])
        reply = _reply(message, owner=self.channel, found=generation is not None)
        if generation is not None:
            reply["events"] = [[event.id, event.data] for event in generation.events]
        self.spawn(self.send(message["reply_to"], reply))

    def on_answers_follow(self, message: dict) -> None:
        # A process follows this one with one request at a time; a new one replaces a last one left
        # unanswered (that process gave up waiting for it).
        follower = message["reply_to"]
        superseded = self._follows.get(follower)
        if superseded is not None:
            superseded.task.cancel()
        pull = self._follows[follower] = _Pull(message)
        pull.task = self.spawn(self._answer_follow(pull))

        def forget(_) -> None:
            if self._follows.get(follower) is pull:
                del self._follows[follower]

        pull.task.add_done_callback(forget)

    def on_answers_add(self, message: dict) -> None:
        """Answers a follower began to read while its follow is pending here: they join it (a follow
        already answered has nothing to join: the follower's next one asks about them)."""
        pull = self._follows.get(message["follower"])
        if pull is not None:
            pull.add(message["after"])

    async def _answer_follow(self, pull: "_Pull") -> None:
        """The news of the answers a follower asks about (`after`: id → its last event), once there is
        some, or after `wait` seconds; answers no longer kept here are said `gone`."""
        from ai.generations import local, news

        deadline = time.monotonic() + pull.message["wait"]
        while True:
            found, gone = _news_of(pull.after, local)
            remaining = deadline - time.monotonic()
            if found or gone or remaining <= 0:
                break
            await asyncio.wait({news(), pull.added()}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        if found:
            await asyncio.sleep(BATCH_WINDOW)  # more news is often on its way: send it together
            found, gone = _news_of(pull.after, local)
        events = {key: [[event.id, event.data] for event in news] for key, news in found.items()}
        await self.send(pull.message["reply_to"], _reply(pull.message, events=events, gone=gone))

    def on_echo(self, message: dict) -> None:
        self.spawn(self.send(message["reply_to"], _reply(message)))

    def on_answer_stop(self, message: dict) -> None:
        self.spawn(self._answer_stop(message))

    async def _answer_stop(self, message: dict) -> None:
        from ai.generations import local

        generation = local(message["answer_id"])
        if generation is not None:
            await generation.stop()
        await self.send(message["reply_to"], _reply(message, found=generation is not None))

    # --- the reader's side ----------------------------------------------------------------------
    def on_answer_reply(self, message: dict) -> None:
        waiter = self._replies.pop(message["request_id"], None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    async def ask(
        self,
        message: dict,
        *,
        to: str,
        group: bool = False,
        patience: float,
        again: float | None = None,
        sent: asyncio.Future | None = None,
    ) -> dict | None:
        """Send `message` to a process (its channel `to`, or every member of the group `to`) and wait
        for the reply; None when none came within `patience` seconds (or the layer failed). With
        `again`, the message is sent again after `again` seconds, then twice as long each time, until
        a reply comes: an answer's owner may join its group after its first event (`owner_joined`),
        and a group's message finds only the members it has when it is sent. The first reply is
        taken, later ones (to the copies) dropped; a copy that cannot be sent is not a failure (an
        earlier one may be answered). `sent` is resolved once the message is with the layer."""
        request_id = uuid.uuid4().hex
        waiter = asyncio.get_running_loop().create_future()
        self._replies[request_id] = waiter
        kind = "group_send" if group else "send"
        try:
            async with asyncio.timeout(patience):  # this process's channel and the send included
                message = {**message, "request_id": request_id, "reply_to": await self.ready()}
                await self.call(kind, to, message)
                if sent is not None:
                    sent.set_result(None)
                while again is not None and not waiter.done():
                    await asyncio.wait({waiter}, timeout=again)
                    if not waiter.done():
                        again *= 2
                        await self.send(to, message, kind=kind)
                return await waiter
        except (TimeoutError, OSError, ConnectionError, RedisError):
            return None
        except Exception:
            logger.warning("channel layer request failed", exc_info=True)
            return None
        finally:
            self._replies.pop(request_id, None)

    async def first_contact(self, answer_id: uuid.UUID) -> dict | None:
        """The owner's reply to `answer.pull` for the answer: one request for all the readers that
        arrive while it is under way (a reader that leaves does not cancel it for the others)."""
        contact = self._contacts.get(answer_id)
        if contact is None:
            message = {"type": "answer.pull", "answer_id": str(answer_id)}
            patience = settings.AI_STREAM_OWNER_TIMEOUT
            asking = self.ask(message, to=_group(answer_id), group=True, patience=patience, again=JOIN_WAIT)
            contact = self.spawn(asking)
            self._contacts[answer_id] = contact
            contact.add_done_callback(lambda _: self._contacts.pop(answer_id, None))
        return await asyncio.shield(contact)

    def follow(self, mirror: Mirror) -> None:
        follower = self.followers.get(mirror.owner)
        if follower is None:
            follower = self.followers[mirror.owner] = _Follower(mirror.owner)
        follower.add(mirror)

    def forget(self, mirror: Mirror) -> None:
        if self.mirrors.get(mirror.answer_id) is mirror:
            del self.mirrors[mirror.answer_id]

    async def close(self) -> None:
        tasks = [task for task in (self._listener, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._listener = self._ready = None
        self.mirrors.clear()
        self.followers.clear()


class _Pull:
    """A follower's pending `answers.follow` here, at the owner: the answers it asks about."""

    def __init__(self, message: dict) -> None:
        self.message = message
        self.after: dict[str, int] = dict(message["after"])
        self.task: asyncio.Task | None = None
        self._added: asyncio.Future | None = None

    def added(self) -> asyncio.Future:
        """A future resolved when answers join the follow."""
        self._added = asyncio.get_running_loop().create_future()
        return self._added

    def add(self, after: dict) -> None:
        self.after.update(after)
        if self._added is not None and not self._added.done():
            self._added.set_result(None)


class _Follower:
    """The answers this process follows on one owner process: one pull at a time for all of them."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.mirrors: dict[str, Mirror] = {}
        self._added: asyncio.Future = asyncio.get_running_loop().create_future()
        _relay.spawn(self._run())

    def add(self, mirror: Mirror) -> None:
        self.mirrors[str(mirror.answer_id)] = mirror
        if not self._added.done():
            self._added.set_result(None)  # the pending pull takes it

    async def _run(self) -> None:
        wait = min(settings.AI_STREAM_KEEPALIVE, settings.AI_STREAM_OWNER_TIMEOUT / 2)
        try:
            while True:
                self._drop_unread()
                after = self._unended(asked=())
                if not after:
                    return
                reply = await self._pull(after, wait)
                if reply is None:
                    for mirror in self.mirrors.values():
                        mirror.interrupt()
                    return
                for key, events in reply["events"].items():
                    self.mirrors[key].extend(events)
                for key in reply["gone"]:
                    self.mirrors[key].interrupt()
        finally:
            if _relay.followers.get(self.owner) is self:
                del _relay.followers[self.owner]
            for mirror in self.mirrors.values():
                mirror.interrupt()  # no more news will come for them
                _relay.forget(mirror)

    def _unended(self, *, asked) -> dict[str, int]:
        """The answers followed here that have not ended and are not in `asked`: id → its last event."""
        return {
            key: len(mirror.events)
            for key, mirror in self.mirrors.items()
            if key not in asked and not mirror.ended.is_set()
        }

    async def _pull(self, after: dict, wait: float) -> dict | None:
        """The owner's reply to one `answers.follow` of `after` (None: no reply in time). The answers
        added while it is pending join it there (`answers.add`, sent once the pull is: the owner has
        the pull first), so one is never asked about twice: the owner never sends the same news twice."""
        loop = asyncio.get_running_loop()
        asked, sent, self._added = set(after), loop.create_future(), loop.create_future()
        message = {"type": "answers.follow", "after": after, "wait": wait}
        patience = wait + settings.AI_STREAM_OWNER_TIMEOUT
        pull = asyncio.ensure_future(_relay.ask(message, to=self.owner, patience=patience, sent=sent))
        await asyncio.wait({pull, sent}, return_when=asyncio.FIRST_COMPLETED)
        while not pull.done():
            await asyncio.wait({pull, self._added}, return_when=asyncio.FIRST_COMPLETED)
            self._added = loop.create_future()
            added = self._unended(asked=asked)
            if added and not pull.done():
                asked.update(added)
                add = {"type": "answers.add", "follower": _relay.channel, "after": added}
                await _relay.send(self.owner, add)
        return pull.result()

    def _drop_unread(self) -> None:
        """Stop following what nobody here reads any more."""
        for key, mirror in list(self.mirrors.items()):
            if mirror.claims == 0:
                del self.mirrors[key]
                _relay.forget(mirror)


def _reply(request: dict, **fields) -> dict:
    return {"type": "answer.reply", "request_id": request["request_id"], **fields}


def _news_of(after: dict, local) -> tuple[dict, list]:
    """({answer id: its events after the given one}, [answer ids no longer kept here])."""
    found, gone = {}, []
    for key, last in after.items():
        generation = local(key)
        if generation is None:
            gone.append(key)
        elif len(generation.events) > last:
            found[key] = generation.events[last:]
    return found, gone


_relay = _Relay()


async def owner_joined(answer_id: uuid.UUID) -> None:
    """Make this process reachable as the answer's owner, before the answer's first event: a reader
    elsewhere may ask for it as soon as it learns its id. A layer slower than `JOIN_WAIT`, or Redis
    unreachable, is not waited for: the join goes on in the background, tried again until it is made
    or the answer's log is freed."""
    if enabled():
        joining = _relay.spawn(_join(answer_id))
        if not _relay.unreachable:
            await asyncio.wait({joining}, timeout=JOIN_WAIT)


async def _join(answer_id: uuid.UUID) -> None:
    from ai.generations import local

    async def group_add() -> None:
        await _relay.call("group_add", _group(answer_id), await _relay.ready())

    def kept() -> bool:  # not freed while Redis was away
        return local(answer_id) is not None

    await retried(group_add, f"join the group of answer {answer_id}", wanted=kept)


def owner_left(answer_id: uuid.UUID) -> None:
    """The answer's log is freed: other processes can no longer read it here."""
    if enabled():
        _relay.spawn(_leave(answer_id))


async def _leave(answer_id: uuid.UUID) -> None:
    try:
        await _relay.call("group_discard", _group(answer_id), await _relay.ready())
    except Exception:
        logger.warning("channel layer: could not leave the group of answer %s", answer_id, exc_info=True)


async def retried(call, what: str, *, wanted=lambda: True):
    """`await call()`, tried again while Redis cannot be reached (every `RECONNECT_DELAY`, doubling up
    to `RECONNECT_DELAY_MAX`) and still `wanted()`: a server that starts, or runs, while Redis is down
    serves its own answers meanwhile and is reachable again once Redis is back."""
    delay = RECONNECT_DELAY
    while True:
        try:
            result = await call()
        except Exception:
            _relay.unreachable = True
            logger.warning("channel layer unreachable: will %s in %g s", what, delay, exc_info=True)
            await asyncio.sleep(delay)
            delay = min(2 * delay, RECONNECT_DELAY_MAX)
            if not wanted():
                return None
        else:
            _relay.unreachable = False
            return result


async def open_remote(answer_id: uuid.UUID, *, after: int) -> AsyncIterator | None:
    """The answer's events after `after` from the process that owns it; None when no process does."""
    if not enabled():
        return None
    mirror = _relay.mirrors.get(answer_id)
    if mirror is None:
        reply = await _relay.first_contact(answer_id)
        if reply is None or not reply.get("found"):
            return None
        mirror = _relay.mirrors.get(answer_id)  # another reader may have made it meanwhile
        if mirror is None:
            mirror = _relay.mirrors[answer_id] = Mirror(answer_id, reply["owner"])
            mirror.extend(reply["events"])
            if mirror.ended.is_set():
                asyncio.get_running_loop().call_later(MIRROR_KEPT, _relay.forget, mirror)
            else:
                _relay.follow(mirror)
    mirror.claims += 1
    return _claimed(mirror, after)


async def _claimed(mirror: Mirror, after: int):
    try:
        async for news in mirror.read(after):
            yield news
    finally:
        mirror.claims -= 1


async def stop_remote(answer_id: uuid.UUID) -> bool:
    """Stop the answer in the process that owns it; True once its end is committed there."""
    if not enabled():
        return False
    message = {"type": "answer.stop", "answer_id": str(answer_id)}
    reply = await _relay.ask(
        message, to=_group(answer_id), group=True, patience=settings.AI_STREAM_OWNER_TIMEOUT, again=JOIN_WAIT
    )
    return bool(reply and reply.get("found"))


async def echo() -> bool:
    """Whether a message this process sends itself through the channels layer comes back (`/healthz`);
    False at once while the process cannot subscribe to its channel (Redis unreachable)."""
    if not enabled():
        return False
    try:
        channel = await asyncio.wait_for(_relay.ready(), JOIN_WAIT)  # the subscription is under way
    except TimeoutError:
        return False
    reply = await _relay.ask({"type": "echo"}, to=channel, patience=settings.AI_STREAM_OWNER_TIMEOUT)
    return reply is not None


async def close() -> None:
    """Stop listening (the process is stopping)."""
    await _relay.close()
