"""The stream's ends when the database misbehaves, and the sweep that runs while streams start."""

import asyncio
import io
import time
from datetime import timedelta

import httpx
import pytest
from django.core.management import call_command
from django.db import DatabaseError
from django.utils import timezone

from ai import generations, services
from ai.tests.sse_client import events
from conversations import services as conversation_services
from conversations.models import Message
from conversations.tests.factories import ConversationFactory, MessageFactory
from quota import services as quota_services
from quota.models import Reservation
from quota.tests.factories import ReservationFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_replay(settings):
    """Logs freed as their answers end: the loop that would free them later ends with each test."""
    settings.AI_STREAM_REPLAY_TTL = 0


def stream_in_process(user, message: str) -> list[dict]:
    """Start an answer and read all its events, in this process (no server); its log is freed."""
    start = services.stream_start(user=user, message=message)

    async def read():
        generation = generations.generation_start(start)
        events_ = [event.data async for news in generation.read(0) if news for event in news]
        await generation.task
        await asyncio.sleep(0.05)  # the replay TTL (0) past
        assert generations.local(start.answer_id) is None
        return events_

    return asyncio.run(read())


def fail(*args, **kwargs):
    raise DatabaseError("the database went away")


def test_an_unwritable_end_still_ends_the_stream_with_an_error_event(user, monkeypatch):
    """`message_finish` is replaced by one that fails: the narrowest way to make only the end fail."""
    monkeypatch.setattr(conversation_services, "message_finish", fail)

    events_ = stream_in_process(user, "[mock:chunks=2][mock:delay_ms=0]")

    assert [event["type"] for event in events_] == ["start", "chunk", "chunk", "error"]
    assert events_[-1]["code"] == "internal_error"
    assert events_[-1]["retryable"] is False
    # Nothing was written: the answer and the reservation are left for the sweep.
    assert Message.objects.get(pk=events_[0]["message_id"]).status == "streaming"
    assert Reservation.objects.count() == 1


def test_a_failed_heartbeat_does_not_end_a_healthy_stream(user, settings, monkeypatch):
    settings.QUOTA_RESERVATION_TTL = 0.3  # a heartbeat every 0.1 s, retried as often when it fails
    attempts = []

    def failing_renew(**kwargs):
        attempts.append(kwargs)
        fail()

    monkeypatch.setattr(quota_services, "quota_renew", failing_renew)

    events_ = stream_in_process(user, "[mock:chunks=5][mock:delay_ms=80]")

    assert [event["type"] for event in events_] == ["start"] + ["chunk"] * 5 + ["done"]
    assert Message.objects.get(pk=events_[0]["message_id"]).status == "complete"
    assert len(attempts) >= 2, "the renewal was tried again after it failed"


def test_streams_starting_sweep_what_a_crashed_process_left(asgi_server_factory, token, user, other_user):
    server = asgi_server_factory(fresh=True, QUOTA_RESERVATION_TTL="1")
    try:
        long_ago = timezone.now() - timedelta(seconds=30)
        left = MessageFactory(
            conversation=ConversationFactory(user=other_user),
            role="assistant",
            status="streaming",
            created_at=long_ago,
        )
        expired = long_ago + timedelta(seconds=1)
        quota = ReservationFactory(quota__user=other_user, created_at=long_ago, expires_at=expired).quota
        time.sleep(0.5)  # past QUOTA_RESERVATION_TTL / 3 since the server's own start-up sweep
        with httpx.Client(timeout=30) as client:
            assert events(client, server.url, token.key, {"message": "[mock:chunks=1]"})[-1].type == "done"
        left.refresh_from_db()
        assert left.status == "interrupted"
        assert not Reservation.objects.filter(quota=quota).exists()
    finally:
        server.stop()


def test_uvicorn_serves_the_stream_too(asgi_server_factory, token):
    server = asgi_server_factory(server="uvicorn")
    with httpx.Client(timeout=30) as client:
        frames = events(client, server.url, token.key, {"message": "[mock:chunks=3][mock:delay_ms=0]"})
    assert [f.type for f in frames] == ["start", "chunk", "chunk", "chunk", "done"]


def test_sweep_streams_command_interrupts_dead_answers_and_deletes_expired_reservations(user, settings):
    settings.QUOTA_RESERVATION_TTL = 600
    long_ago = timezone.now() - timedelta(hours=1)
    dead = MessageFactory(role="assistant", status="streaming", created_at=long_ago)
    live = MessageFactory(role="assistant", status="streaming", created_at=timezone.now())
    ReservationFactory(quota__user=user, created_at=long_ago)
    out = io.StringIO()

    call_command("sweep_streams", stdout=out)

    assert out.getvalue().strip() == "Deleted 1 expired reservations; marked 1 messages interrupted."
    dead.refresh_from_db()
    live.refresh_from_db()
    assert (dead.status, live.status) == ("interrupted", "streaming")
    assert not Reservation.objects.exists()
