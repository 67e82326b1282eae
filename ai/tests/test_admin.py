"""The message admin's live answers: shown as live, and stopped by its action from any process."""

import re
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from ai.tests.sse_client import iter_frames, stream
from conversations.models import Message
from conversations.tests.factories import MessageFactory

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = "/admin/conversations/message/"


def test_the_message_list_shows_which_answers_are_live(admin_client, settings):
    live = MessageFactory(role="assistant", status="streaming")
    stale = MessageFactory(
        role="assistant",
        status="streaming",
        created_at=timezone.now() - timedelta(seconds=settings.QUOTA_RESERVATION_TTL + 60),
    )
    ended = MessageFactory(role="assistant", status="complete")

    response = admin_client.get(MESSAGES)

    shown = {row.pk: row.is_live for row in response.context["cl"].result_list}
    assert shown == {live.pk: True, stale.pk: False, ended.pk: False}


def admin_session(server, username: str, password: str) -> httpx.Client:
    """An httpx client logged in to the admin of `server` through its login form."""
    client = httpx.Client(base_url=server.url, timeout=30)
    page = client.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    answer = client.post(
        "/admin/login/?next=/admin/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
    )
    assert answer.status_code == 302, answer.text
    return client


def test_the_stop_action_stops_an_answer_running_in_another_process(
    asgi_server_factory, django_user_model, token
):
    django_user_model.objects.create_superuser("root", "root@example.com", "root-password")
    settings = {"REDIS_URL": "redis://127.0.0.1:6379/0", "AI_STREAM_OWNER_TIMEOUT": "2"}
    owner = asgi_server_factory(**settings, SERVER_NAME="A")
    operators = asgi_server_factory(**settings, SERVER_NAME="B")
    body = {"message": "[mock:chunks=200][mock:delay_ms=50]"}
    with httpx.Client(timeout=30) as client, stream(client, owner.url, token.key, body) as response:
        frames = iter_frames(response)
        message_id = next(frames).data["message_id"]
        next(frames)
        admin = admin_session(operators, "root", "root-password")
        try:
            changelist = admin.get(MESSAGES)
            csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', changelist.text).group(1)
            done = admin.post(
                MESSAGES,
                data={
                    "action": "stop_answers",
                    "_selected_action": message_id,
                    "index": "0",
                    "csrfmiddlewaretoken": csrf,
                },
                follow_redirects=True,
            )
        finally:
            admin.close()
        end = [f for f in frames if f.data is not None][-1]
    assert "Stopped 1 answer(s)." in done.text
    assert end.type == "done"
    assert end.data["finish_reason"] == "stopped"
    assert Message.objects.get(pk=message_id).status == "stopped"
