"""The middleware's async path (chatsvc.middleware), in process through `AsyncClient`: which hooks run
on the event loop, which in a thread, and that sessions, CSRF and messages still work there."""

import asyncio
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from django.contrib.sessions.models import Session
from django.db import connections
from django.http import HttpRequest
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from conversations.models import Conversation
from conversations.tests.factories import ConversationFactory

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

LOGIN = "/accounts/login/"
CONVERSATIONS = "/api/conversations/"
STOCK_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
async def _close_the_threads_connections():
    """The sync views ran in asgiref's thread, on its own connection: close it, as a server would."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def thread_hops(monkeypatch) -> list[str]:
    """The qualified names of the functions run through `sync_to_async` from now on."""
    hops: list[str] = []
    call = SyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        func = getattr(self.func, "func", self.func)  # a functools.partial's function
        hops.append(getattr(func, "__qualname__", type(func).__qualname__))
        return await call(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)
    return hops


def middleware_hops(hops: list[str]) -> list[str]:
    return [name for name in hops if "Middleware" in name]


@pytest.fixture
def form_parses(monkeypatch) -> list[str]:
    """Where each request body is parsed into `request.POST` from now on: "event loop" or "thread"."""
    places: list[str] = []
    load = HttpRequest._load_post_and_files

    def recorded(self):
        try:
            asyncio.get_running_loop()
            places.append("event loop")
        except RuntimeError:
            places.append("thread")
        return load(self)

    monkeypatch.setattr(HttpRequest, "_load_post_and_files", recorded)
    return places


async def csrf_token_of(client: AsyncClient) -> str:
    page = await client.get(LOGIN)
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)


@pytest.mark.parametrize("content_type", ["multipart/form-data", "application/x-www-form-urlencoded"])
async def test_a_posted_form_is_parsed_in_a_thread_for_the_csrf_check(
    user, content_type, form_parses, thread_hops
):
    client = AsyncClient(enforce_csrf_checks=True)
    token = await csrf_token_of(client)
    form_parses.clear()
    thread_hops.clear()
    form = {"username": "alice", "password": "alice-password", "csrfmiddlewaretoken": token}
    body = urlencode(form) if content_type.endswith("urlencoded") else form
    kwargs = {} if content_type.startswith("multipart") else {"content_type": content_type}

    response = await client.post(LOGIN, body, **kwargs)

    assert response.status_code == 302  # logged in: the CSRF check read the form's token
    assert form_parses[0] == "thread"  # the CSRF check is the form's first reader
    assert "CsrfViewMiddleware.process_view" in thread_hops


async def test_a_session_json_post_needs_its_csrf_token_and_no_middleware_hop(user, thread_hops):
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(user)
    token = await csrf_token_of(client)
    thread_hops.clear()

    created = await client.post(
        CONVERSATIONS,
        {"title": "From the loop"},
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    refused = await client.post(CONVERSATIONS, {"title": "No token"}, content_type="application/json")

    assert (created.status_code, refused.status_code) == (201, 403)
    assert "CsrfViewMiddleware.process_view" not in thread_hops
    assert [c.title async for c in Conversation.objects.all()] == ["From the loop"]


async def test_a_csrf_token_kept_in_the_session_guards_session_requests(settings, user):
    settings.CSRF_USE_SESSIONS = True
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(user)
    token = await csrf_token_of(client)

    created = await client.post(
        CONVERSATIONS, {"title": "Checked"}, content_type="application/json", headers={"X-CSRFToken": token}
    )
    refused = await client.post(
        CONVERSATIONS, {"title": "Forged"}, content_type="application/json", headers={"X-CSRFToken": "x" * 32}
    )

    assert (created.status_code, refused.status_code) == (201, 403)
    assert "csrftoken" not in client.cookies  # the token lives in the session only
    session = await Session.objects.aget()
    assert session.get_decoded()["_csrftoken"]
    assert [c.title async for c in Conversation.objects.all()] == ["Checked"]


async def test_a_session_saved_on_every_request_is_saved_from_the_async_path(settings, user, time_machine):
    settings.SESSION_SAVE_EVERY_REQUEST = True
    time_machine.move_to(datetime(2026, 6, 15, 12, tzinfo=UTC), tick=False)
    client = AsyncClient()
    await client.aforce_login(user)
    time_machine.move_to(datetime(2026, 6, 15, 13, tzinfo=UTC), tick=False)

    response = await client.get(CONVERSATIONS)

    assert response.status_code == 200
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    session = await Session.objects.aget(session_key=key)
    expected = datetime(2026, 6, 15, 13, tzinfo=UTC) + timedelta(seconds=settings.SESSION_COOKIE_AGE)
    assert session.expire_date == expected  # saved by this request, an hour after the login


@pytest.mark.parametrize(
    "storage",
    [
        "django.contrib.messages.storage.fallback.FallbackStorage",
        "django.contrib.messages.storage.session.SessionStorage",
    ],
    ids=["cookie", "session"],
)
async def test_a_message_is_shown_once_from_the_async_path(async_client, admin_user, settings, storage):
    settings.MESSAGE_STORAGE = storage
    conversation = await ConversationFactory._meta.model.objects.acreate(user=admin_user, title="Old")
    await async_client.aforce_login(admin_user)

    deleted = await async_client.post(
        f"/admin/conversations/conversation/{conversation.pk}/delete/", {"post": "yes"}
    )
    shown = await async_client.get(deleted["Location"])
    again = await async_client.get(deleted["Location"])

    assert deleted.status_code == 302
    assert "was deleted successfully" in shown.content.decode()
    assert "was deleted successfully" not in again.content.decode()


@pytest.mark.parametrize(
    ("middleware", "hops"),
    [
        (None, []),
        (
            STOCK_MIDDLEWARE,  # the counter sees hops: Django's own middleware makes one per sync hook
            [
                "SecurityMiddleware.process_request",
                "SessionMiddleware.process_request",
                "CsrfViewMiddleware.process_request",
                "AuthenticationMiddleware.process_request",
                "MessageMiddleware.process_request",
                "CsrfViewMiddleware.process_view",
                "XFrameOptionsMiddleware.process_response",
                "MessageMiddleware.process_response",
                "CsrfViewMiddleware.process_response",
                "SessionMiddleware.process_response",
                "SecurityMiddleware.process_response",
            ],
        ),
    ],
    ids=["chatsvc", "django"],
)
async def test_a_token_get_makes_no_thread_hop_in_the_middleware(
    settings, user, thread_hops, middleware, hops
):
    if middleware:
        settings.MIDDLEWARE = middleware
    token = await Token.objects.acreate(user=user)
    thread_hops.clear()

    response = await AsyncClient().get(CONVERSATIONS, headers={"Authorization": f"Token {token.key}"})

    assert response.status_code == 200
    assert middleware_hops(thread_hops) == hops
    # Besides: the request_started receivers, the (sync) view, rendering its response, closing it.
    assert len(thread_hops) - len(hops) == 4, thread_hops
