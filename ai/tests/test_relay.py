"""The relay's use of the channels layer, against a real Redis of the test's own."""

import asyncio
import uuid

import pytest
import redis

from ai import relay
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
