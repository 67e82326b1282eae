"""The relay's use of the channels layer, against a real Redis of the test's own."""

import asyncio
import uuid

import pytest
import redis

from ai import generations, relay
from ai.events import EventLog
from conftest import RedisServer


@pytest.fixture
def redis_layer(settings):
    server = RedisServer()
    settings.REDIS_URL = server.url
    settings.CHANNEL_LAYERS = {
        relay.LAYER: {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [server.url]},
        }
    }
    yield server
    server.stop()


def test_a_burst_of_answers_joining_their_groups_at_once_all_join(redis_layer):
    """Hundreds of answers starting at once (a burst after a deploy) each join their group, none refused
    (redis-py 8 refuses a command at once when its pool is exhausted: the layer's calls must queue)."""
    answers = [uuid.uuid4() for _ in range(300)]

    async def scenario():
        try:
            await asyncio.gather(*(relay.owner_joined(answer_id) for answer_id in answers))
            layer = relay._relay.layer._get_layer()
            groups = [layer._get_group_channel_name(relay._group(a)) for a in answers]
            subscribers = dict(redis.Redis.from_url(redis_layer.url).pubsub_numsub(*groups))
            return [subscribers[group.encode()] for group in groups], len(relay._relay._tasks)
        finally:
            await relay.close()

    members, tasks = asyncio.run(scenario())
    assert members == [1] * len(answers)  # each answer's group: this process subscribed to it
    assert tasks == 0  # every join ended (and no request of the relay waits)


def test_a_message_the_process_sends_itself_comes_back_and_none_while_redis_is_down(redis_layer):
    """`/healthz`'s check of the layer: an echo through Redis, refused (not hung) while it is down."""

    async def scenario():
        try:
            up = await relay.echo()
            redis_layer.stop()
            down = await asyncio.wait_for(relay.echo(), 15)
            return up, down
        finally:
            await relay.close()

    assert asyncio.run(scenario()) == (True, False)


def test_a_reader_that_asks_before_the_owner_has_joined_the_answers_group_is_answered_once_it_has(
    redis_layer, settings
):
    """An owner joins its answer's group after its first event when the layer is slower than
    `JOIN_WAIT`; a reader elsewhere may ask in between, to a group without members yet. The ask is
    sent again until the owner, once in the group, answers it — not a 204 after the owner's timeout."""
    settings.AI_STREAM_OWNER_TIMEOUT = 5 * relay.JOIN_WAIT  # sent at 0, 1 and 3 × JOIN_WAIT
    answer_id = uuid.uuid4()
    generation = EventLog()
    generation.log({"type": "start"})

    async def scenario():
        try:
            asking = asyncio.ensure_future(relay._relay.first_contact(answer_id))
            await asyncio.sleep(1.5 * relay.JOIN_WAIT)  # the ask went to a group of no one
            assert not asking.done()
            generations._generations[answer_id] = generation
            await relay.owner_joined(answer_id)
            return await asking
        finally:
            generations._generations.pop(answer_id, None)
            await relay.close()

    reply = asyncio.run(scenario())
    assert reply["found"] is True
    assert reply["events"] == [[1, {"type": "start"}]]
