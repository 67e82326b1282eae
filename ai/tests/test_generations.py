"""The owner of an answer in this process: its readers and its log are freed, whatever they do."""

import asyncio

import pytest

from ai import generations, services
from conversations.models import Message
from quota.models import Reservation

pytestmark = pytest.mark.django_db(transaction=True)


def test_readers_generations_and_logs_go_back_to_zero(user, settings):
    settings.AI_STREAM_REPLAY_TTL = 0.3
    start = services.stream_start(user=user, message="[mock:chunks=20][mock:delay_ms=10]")

    async def scenario():
        generation = generations.generation_start(start)
        complete = generation.read(0)
        leaving_early = generation.read(0)
        parked = generation.read(0)
        await anext(leaving_early)
        await anext(parked)
        await anext(complete)
        during = generations.stats()
        await leaving_early.aclose()  # a reader that leaves
        waiting = asyncio.ensure_future(anext(parked))  # a reader cancelled while it waits for news
        await asyncio.sleep(0.05)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await parked.aclose()
        read = [event async for news in complete for event in news]
        await generation.task
        await asyncio.sleep(0)  # its done callbacks (the owner's discard from the running) run
        ended = generations.stats()
        await asyncio.sleep(0.4)  # past AI_STREAM_REPLAY_TTL
        return during, ended, generations.stats(), read, generations.local(start.answer_id)

    during, ended, later, read, kept = asyncio.run(scenario())
    assert during == {"running": 1, "kept": 1, "readers": 3}
    assert ended == {"running": 0, "kept": 1, "readers": 0}
    assert later == {"running": 0, "kept": 0, "readers": 0}
    assert kept is None
    assert read[-1].data["type"] == "done"
    assert Message.objects.get(pk=start.answer_id).status == "complete"
    assert not Reservation.objects.exists()


def test_a_reader_that_leaves_never_changes_the_answer(user):
    start = services.stream_start(user=user, message="[mock:chunks=10][mock:delay_ms=10]")

    async def scenario():
        generation = generations.generation_start(start)
        reader = generation.read(0)
        await anext(reader)
        await reader.aclose()
        await generation.task
        return [event.data["type"] for event in generation.events]

    types = asyncio.run(scenario())
    assert types == ["start"] + ["chunk"] * 10 + ["done"]
    answer = Message.objects.get(pk=start.answer_id)
    assert (answer.status, answer.usage["completion_tokens"]) == ("complete", 10)
