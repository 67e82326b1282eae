"""The relay's use of the channels layer, against a real Redis of the test's own."""

import asyncio
import uuid

import pytest

from ai import relay
from conftest import RedisServer


@pytest.fixture
def redis_layer(settings):
    server = RedisServer()
    settings.REDIS_URL = server.url
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [server.url]}}
    }
    yield server
    server.stop()


def test_a_burst_of_layer_calls_beyond_the_redis_pool_waits_its_turn_and_fails_none(redis_layer):
    """redis-py (8 and later) fails a command at once when all of its pool's 100 connections are busy:
    a thousand answers joining their groups at once must each join, none refused."""
    answers = [uuid.uuid4() for _ in range(300)]

    async def scenario():
        try:
            await asyncio.gather(*(relay.owner_joined(answer_id) for answer_id in answers))
            layer = relay._relay.layer
            members = [await layer.connection(0).zcard(layer._group_key(relay._group(a))) for a in answers]
            return members, len(relay._relay._tasks)
        finally:
            await relay.close()

    members, tasks = asyncio.run(scenario())
    assert members == [1] * len(answers)  # each answer's group holds this process's channel
    assert tasks == 0  # every join ended (and no request of the relay waits)
