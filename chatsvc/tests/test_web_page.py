"""The web chat page at `/`, driven in a real Chromium against a live daphne on the test database."""

import contextlib
import json
import re
import socket
import threading
import time
from datetime import datetime

import pytest
from playwright.sync_api import expect

from quota.models import Quota

pytestmark = pytest.mark.django_db(transaction=True)

SLOW_ANSWER = "[mock:chunks=30][mock:delay_ms=50]"
RELOADED_ANSWER = "[mock:chunks=30][mock:delay_ms=100]"
LONG_ANSWER = "[mock:chunks=400][mock:delay_ms=50] a long one"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
HOSTILE_IMAGE = '<img src=x onerror="window.__xss=1">'


def compose(page):
    return page.locator("#compose-input")


def send(page, text: str) -> None:
    box = compose(page)
    box.fill(text)
    box.press("Enter")


def answers(page):
    return page.locator(".message-assistant")


def wait_for_status(answer, status: str) -> None:
    expect(answer).to_have_attribute("data-status", status)


def wait_for_words(answer, count: int) -> list[str]:
    """The answer's words, once it shows at least `count` of them."""
    body = answer.locator(".message-body")
    expect(body).to_have_text(re.compile(rf"^\s*(\S+\s+){{{count - 1}}}\S"))
    return body.text_content().split()


def current_conversation_id(page) -> str:
    page.wait_for_url(re.compile(r"#[0-9a-f-]{36}$"))
    return page.url.rsplit("#", 1)[1]


def api_messages(page, conversation_id: str) -> list[dict]:
    response = page.request.get(f"/api/conversations/{conversation_id}/messages/")
    assert response.status == 200
    return response.json()["results"]


def api_conversations(page) -> list[dict]:
    response = page.request.get("/api/conversations/")
    assert response.status == 200
    return response.json()["results"]


def reset_time(page) -> str:
    """`HH:MM` (UTC) of the caller's quota reset, as the API tells it."""
    resets_at = page.request.get("/api/quota/").json()["resets_at"]
    return datetime.fromisoformat(resets_at.replace("Z", "+00:00")).strftime("%H:%M")


# --- Logging in and out -------------------------------------------------------------------------


def test_a_logged_out_visit_redirects_to_the_login_page(browser_page, live_asgi):
    browser_page.goto("/")

    expect(browser_page).to_have_url(f"{live_asgi.url}/accounts/login/?next=/")
    expect(browser_page.get_by_role("button", name="Log in")).to_be_visible()


def test_logging_in_through_the_form_opens_the_chat_page(browser_page, user, live_asgi):
    page = browser_page
    page.goto("/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("didn't match")

    page.get_by_label("Password").fill("alice-password")
    page.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(f"{live_asgi.url}/")
    expect(page.locator(".who")).to_have_text("alice")
    expect(page.locator("#quota")).to_have_text(f"100 requests left · resets at {reset_time(page)} UTC")
    expect(compose(page)).to_be_focused()


def test_logging_out_ends_the_session(chat_page, live_asgi):
    chat_page.get_by_role("button", name="Log out").click()

    expect(chat_page).to_have_url(f"{live_asgi.url}/accounts/login/")
    chat_page.goto("/")
    expect(chat_page).to_have_url(f"{live_asgi.url}/accounts/login/?next=/")


def test_a_post_without_the_csrf_token_is_refused(chat_page):
    body = json.dumps({"title": "no token"})
    headers = {"Content-Type": "application/json"}

    refused = chat_page.request.post("/api/conversations/", data=body, headers=headers)
    refused_stream = chat_page.request.post(
        "/api/ai/chat/stream", data=json.dumps({"message": "hi"}), headers=headers
    )

    assert refused.status == 403
    assert refused.json()["code"] == "permission_denied"
    assert refused_stream.status == 403
    assert api_conversations(chat_page) == []
    token = next(c["value"] for c in chat_page.context.cookies() if c["name"] == "csrftoken")
    accepted = chat_page.request.post(
        "/api/conversations/", data=body, headers={**headers, "X-CSRFToken": token}
    )
    assert accepted.status == 201


# --- Streaming ----------------------------------------------------------------------------------


def test_the_answer_types_as_it_arrives_and_is_there_after_a_reload(chat_page):
    page = chat_page
    send(page, SLOW_ANSWER)
    answer = answers(page).last
    body = answer.locator(".message-body")
    expect(compose(page)).to_be_disabled()
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(body).to_have_attribute("aria-live", "polite")

    lengths: list[int] = []
    deadline = time.monotonic() + 20
    while answer.get_attribute("data-status") != "complete" and time.monotonic() < deadline:
        length = len(body.text_content().strip())
        if not lengths or length != lengths[-1]:
            lengths.append(length)
        time.sleep(0.01)
    wait_for_status(answer, "complete")

    final = body.text_content().strip()
    intermediate = [length for length in lengths if 0 < length < len(final)]
    assert len(intermediate) >= 5, lengths
    assert lengths == sorted(lengths)
    assert len(final.split()) == 30
    expect(compose(page)).to_be_enabled()
    expect(compose(page)).to_be_focused()

    conversation_id = current_conversation_id(page)
    stored = api_messages(page, conversation_id)
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "complete")]
    assert stored[1]["content"] == final

    page.reload()
    expect(page.locator(".conversation[aria-current=page]")).to_have_text(SLOW_ANSWER)
    expect(page.locator(".message-user .message-body")).to_have_text([SLOW_ANSWER])
    expect(answers(page).locator(".message-body")).to_have_text([final])


def test_enter_sends_and_shift_enter_starts_a_new_line(chat_page):
    box = compose(chat_page)
    box.press_sequentially("first line")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    expect(box).to_have_value("first line\nsecond line")

    box.press("Enter")

    expect(chat_page.locator(".message-user .message-body")).to_have_text(["first line\nsecond line"])
    expect(chat_page.locator(".message-user .message-body")).to_have_css("white-space", "pre-wrap")
    wait_for_status(answers(chat_page).last, "complete")
    expect(box).to_have_value("")


def test_a_reload_mid_answer_shows_the_text_so_far_and_types_on_to_the_end(chat_page):
    page = chat_page
    send(page, RELOADED_ANSWER)
    before = wait_for_words(answers(page).last, 5)
    conversation_id = current_conversation_id(page)
    reads = []
    page.on("request", lambda r: "/api/ai/chat/stream/" in r.url and reads.append(r))

    page.reload()

    answer = answers(page).last
    body = answer.locator(".message-body")
    samples = []  # (status, words) as the page shows them, until the answer is complete
    deadline = time.monotonic() + 20
    while (status := answer.get_attribute("data-status")) != "complete":
        assert time.monotonic() < deadline, f"the answer did not complete: {samples[-1:]}"
        samples.append((status, body.text_content().split()))
        time.sleep(0.01)
    final = body.text_content().strip()

    typing = [words for status, words in samples if status == "streaming"]
    assert any(words[: len(before)] == before for words in typing), (before, typing[:3])
    assert len({len(words) for words in typing if len(words) >= len(before)}) >= 2, "it stopped typing"
    assert [len(words) for words in typing] == sorted(len(words) for words in typing)
    assert len(final.split()) == 30  # nothing twice, nothing missing
    stored = api_messages(page, conversation_id)
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "complete")]
    assert stored[1]["content"] == final
    assert [r.url.rsplit("/", 1)[1] for r in reads] == [stored[1]["id"]]
    assert reads[0].method == "GET"
    expect(compose(page)).to_be_enabled()


def test_the_send_button_stays_disabled_while_the_answer_streams_also_after_a_reload(chat_page):
    page = chat_page
    send(page, LONG_ANSWER)
    answer = answers(page).last
    expect(compose(page)).to_be_disabled()
    expect(page.locator("#send")).to_be_disabled()
    wait_for_words(answer, 3)

    page.reload()

    answer = answers(page).last
    wait_for_status(answer, "streaming")
    expect(compose(page)).to_be_disabled()
    expect(page.locator("#send")).to_be_disabled()
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_visible()
    shown = len(wait_for_words(answer, 1))
    wait_for_words(answer, shown + 3)  # still typing
    expect(compose(page)).to_be_disabled()

    stop.click()

    wait_for_status(answer, "stopped")
    expect(compose(page)).to_be_enabled()
    expect(page.locator("#send")).to_be_enabled()
    assert api_messages(page, current_conversation_id(page))[1]["status"] == "stopped"


def test_stop_calls_the_stop_endpoint_and_the_answer_ends_stopped_with_its_partial_text(chat_page):
    page = chat_page
    send(page, LONG_ANSWER)
    answer = answers(page).last
    wait_for_words(answer, 3)

    with page.expect_response(re.compile(r"/api/ai/chat/stream/[0-9a-f-]{36}/stop$")) as stopped:
        page.get_by_role("button", name="Stop").click()

    assert stopped.value.status == 200
    assert stopped.value.request.method == "POST"
    assert stopped.value.request.headers["x-csrftoken"]
    wait_for_status(answer, "stopped")
    expect(answer.locator(".message-note")).to_contain_text("Stopped")
    expect(compose(page)).to_be_enabled()
    partial = answer.locator(".message-body").text_content().strip()
    assert 3 <= len(partial.split()) < 400
    stored = api_messages(page, current_conversation_id(page))[1]
    assert stored["id"] == answer.get_attribute("data-message-id")
    assert (stored["status"], stored["content"]) == ("stopped", partial)
    assert stopped.value.json()["status"] == "stopped"

    page.reload()
    wait_for_status(answers(page).last, "stopped")
    expect(answers(page).last.locator(".message-note")).to_contain_text("Stopped")
    expect(answers(page).last.locator(".message-body")).to_have_text(partial)


def test_retry_on_a_failed_answer_regenerates_it_in_place(chat_page):
    page = chat_page
    posts = []
    page.on("request", lambda r: r.url.endswith("/api/ai/chat/stream") and posts.append(r))
    send(page, "[mock:fail_after=2] please")
    answer = answers(page).last
    wait_for_status(answer, "failed")
    expect(answer.get_by_role("alert")).to_contain_text("The mock adapter failed mid-answer")
    expect(answer.locator(".message-body")).not_to_have_text("")
    failed_id = answer.get_attribute("data-message-id")
    element = answer.element_handle()
    conversation_id = current_conversation_id(page)

    answer.get_by_role("button", name="Retry").click()

    # The mock reads its directives from the newest user message, so the new answer fails again.
    expect(answer).not_to_have_attribute("data-message-id", failed_id)
    wait_for_status(answer, "failed")
    assert element.evaluate("node => node.isConnected")  # the same place on the page
    expect(answers(page)).to_have_count(1)
    expect(page.locator(".message-user")).to_have_count(1)
    assert [r.post_data_json for r in posts] == [
        {"message": "[mock:fail_after=2] please"},
        {"conversation_id": conversation_id, "regenerate": True},
    ]
    stored = api_messages(page, conversation_id)
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "failed")]
    assert stored[1]["id"] == answer.get_attribute("data-message-id") != failed_id

    page.reload()  # a stored failed answer offers Retry too
    answer = answers(page).last
    wait_for_status(answer, "failed")
    answer.get_by_role("button", name="Retry").click()

    expect(answer).not_to_have_attribute("data-message-id", stored[1]["id"])
    wait_for_status(answer, "failed")
    assert len(posts) == 3
    assert posts[2].post_data_json == {"conversation_id": conversation_id, "regenerate": True}
    again = api_messages(page, conversation_id)
    assert [m["role"] for m in again] == ["user", "assistant"]
    assert again[1]["id"] == answer.get_attribute("data-message-id")
    keys = [r.headers["idempotency-key"] for r in posts]
    assert all(UUID.match(key) for key in keys), keys
    assert len(set(keys)) == 3  # one key per user action


def test_a_send_that_fails_on_the_network_is_sent_again_with_its_idempotency_key(
    chat_page, expected_console_errors
):
    expected_console_errors.append("ERR_CONNECTION_RESET")  # the cut connection, logged by the browser
    page = chat_page
    keys = []

    def lose_the_first_answer(route):
        keys.append(route.request.headers["idempotency-key"])
        if len(keys) == 1:
            route.fetch()  # the server gets the request and answers it in full…
            route.abort("connectionreset")  # …but the page never sees the answer
        else:
            route.continue_()

    page.route("**/api/ai/chat/stream", lose_the_first_answer)
    send(page, "only once, please")

    answer = answers(page).last
    wait_for_status(answer, "complete")
    assert len(keys) == 2
    assert keys[0] == keys[1]
    stored = api_messages(page, current_conversation_id(page))
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "complete")]
    assert stored[1]["content"] == answer.locator(".message-body").text_content().strip()
    expect(page.locator(".message")).to_have_count(2)


def test_a_message_sent_while_another_tab_is_answering_is_refused_politely(chat_page):
    page = chat_page
    send(page, "hello")
    wait_for_status(answers(page).last, "complete")
    conversation_id = current_conversation_id(page)
    other = page.context.new_page()
    other.goto(f"/#{conversation_id}")
    wait_for_status(answers(other).last, "complete")
    send(page, LONG_ANSWER)
    wait_for_words(answers(page).last, 3)

    send(other, "me too")

    notice = other.locator("#page-notice")
    expect(notice).to_contain_text("This conversation is still writing an answer.")
    expect(notice).to_have_attribute("role", "status")
    expect(compose(other)).to_have_value("me too")
    expect(compose(other)).to_be_disabled()
    expect(other.locator(".message-user .message-body")).to_have_text(["hello", LONG_ANSWER])
    wait_for_status(answers(other).last, "streaming")
    wait_for_words(answers(other).last, 3)
    assert [m["content"] for m in api_messages(page, conversation_id) if m["role"] == "user"] == [
        "hello",
        LONG_ANSWER,
    ]

    other.get_by_role("button", name="Stop").click()  # one reader stops the answer for every reader

    wait_for_status(answers(other).last, "stopped")
    wait_for_status(answers(page).last, "stopped")
    expect(compose(page)).to_be_enabled()
    expect(compose(other)).to_be_enabled()
    expect(compose(other)).to_have_value("me too")
    other.close()


def test_with_one_request_left_the_second_message_shows_when_the_quota_resets(
    browser_page, user, log_in, expected_console_errors
):
    expected_console_errors.append("status of 429")  # the refused request, logged by the browser
    Quota.objects.create(user=user, request_limit=1)
    page = browser_page
    log_in(page)
    at = reset_time(page)
    expect(page.locator("#quota")).to_have_text(f"1 request left · resets at {at} UTC")

    send(page, "the first one")
    wait_for_status(answers(page).last, "complete")
    expect(page.locator("#quota")).to_have_text(f"0 requests left · resets at {at} UTC")

    send(page, "the second one")

    refusal = answers(page).last
    wait_for_status(refusal, "quota")
    expect(refusal.get_by_role("alert")).to_contain_text(f"Your quota is used up. It resets at {at} UTC")
    expect(page.locator(".message-user .message-note").last).to_have_text("Not sent.")
    expect(compose(page)).to_be_enabled()


# --- A dropped connection: the answer goes on on the server, the page reads on ------------------


class CuttableProxy:
    """A TCP proxy between the browser and a live server whose connections a test can cut, and whose
    network it can take away (`hold`: every new connection is closed at once) and give back."""

    def __init__(self, port: int):
        self.port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held = False
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.held:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.port))
            with self.lock:
                self.sockets |= {client, upstream}
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            self._shut(sock)

    def _shut(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with self.lock:
            self.sockets.discard(sock)

    def cut(self) -> None:
        """End every open connection, mid-answer or not."""
        with self.lock:
            sockets = list(self.sockets)
        for sock in sockets:
            self._shut(sock)

    def hold(self) -> None:
        self.held = True

    def release(self) -> None:
        self.held = False

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def proxied_chat_page(chromium, user, log_in):
    """`proxied_chat_page(server)` → (page, proxy): the chat page, logged in, reaching `server` through a
    CuttableProxy. At teardown: no uncaught page errors."""
    opened = []

    def open_page(server):
        proxy = CuttableProxy(server.port)
        context = chromium.new_context(base_url=proxy.url, viewport={"width": 1200, "height": 800})
        context.set_default_timeout(15_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        opened.append((proxy, context, errors))
        log_in(page)
        return page, proxy

    yield open_page
    for proxy, context, errors in opened:
        context.close()
        proxy.close()
        assert errors == []


def test_an_answer_whose_connection_drops_is_read_on_from_the_last_event_seen(proxied_chat_page, live_asgi):
    page, proxy = proxied_chat_page(live_asgi)
    send(page, RELOADED_ANSWER)
    answer = answers(page).last
    before = wait_for_words(answer, 5)
    reads = []
    page.on("request", lambda r: "/api/ai/chat/stream/" in r.url and reads.append(r))

    proxy.cut()

    wait_for_status(answer, "complete")
    final = answer.locator(".message-body").text_content().strip()
    assert final.split()[: len(before)] == before
    assert len(final.split()) == 30  # nothing twice, nothing missing
    stored = api_messages(page, current_conversation_id(page))
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "complete")]
    assert stored[1]["content"] == final
    assert reads, "the answer was not read again"
    assert reads[0].method == "GET"
    assert reads[0].url.endswith(f"/api/ai/chat/stream/{stored[1]['id']}")
    assert int(reads[0].headers["last-event-id"]) >= 1 + len(before)  # `start`, then one chunk a word


def test_after_the_page_gives_up_reconnecting_retry_shows_the_answer_as_stored(
    proxied_chat_page, asgi_server_factory
):
    server = asgi_server_factory(AI_STREAM_REPLAY_TTL="0")  # an ended answer's events are not kept
    page, proxy = proxied_chat_page(server)
    send(page, RELOADED_ANSWER)
    answer = answers(page).last
    wait_for_words(answer, 5)
    conversation_id = current_conversation_id(page)

    proxy.hold()  # no network, for longer than the page keeps trying
    proxy.cut()

    expect(answer).to_have_attribute("data-status", "disconnected", timeout=30_000)
    expect(answer.get_by_role("alert")).to_contain_text("The connection to the service was lost.")
    direct = page.request.get(f"{server.url}/api/conversations/{conversation_id}/messages/")
    stored = direct.json()["results"][1]
    assert stored["status"] == "complete"  # the answer went on without the page
    proxy.release()
    with page.expect_response(re.compile(r"/api/ai/chat/stream/[0-9a-f-]{36}$")) as read:
        answer.get_by_role("button", name="Retry").click()

    assert read.value.status == 204
    wait_for_status(answer, "complete")
    expect(answer.locator(".message-body")).to_have_text(stored["content"])
    expect(compose(page)).to_be_enabled()


# --- Rendering: Markdown for answers, text for users, nothing executable ------------------------


def test_answers_are_markdown_with_safe_links(chat_page):
    send(chat_page, "**bold** `code` [site](https://example.com/) [mock:echo_context]")

    answer = answers(chat_page).last
    wait_for_status(answer, "complete")
    expect(answer.locator("strong")).to_have_text("bold")
    expect(answer.locator("code")).to_have_text("code")
    link = answer.get_by_role("link", name="site")
    expect(link).to_have_attribute("href", "https://example.com/")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(chat_page.locator(".message-user strong")).to_have_count(0)


def test_hostile_content_does_nothing(chat_page):
    page = chat_page
    dialogs = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    send(page, HOSTILE_IMAGE)
    wait_for_status(answers(page).last, "complete")
    send(page, "[mock:echo_context]")
    wait_for_status(answers(page).last, "complete")
    send(page, "[click](javascript:window.__xss=1) [mock:echo_context]")
    wait_for_status(answers(page).last, "complete")

    expect(page.locator(".message-user .message-body").first).to_have_text(HOSTILE_IMAGE)
    expect(answers(page).nth(1)).to_contain_text("<img src=x onerror=")
    expect(page.locator("#messages img")).to_have_count(0)
    links = answers(page).last.locator("a")
    expect(links).to_have_count(1)
    assert not (links.get_attribute("href") or "").lower().startswith("javascript")
    links.click()
    page.reload()  # the stored messages, rendered again from the API
    wait_for_status(answers(page).last, "complete")
    answers(page).last.locator("a").click()
    assert page.evaluate("window.__xss") is None
    assert dialogs == []
    expect(page.locator("#messages img")).to_have_count(0)


# --- Conversations and layout -------------------------------------------------------------------


def test_conversations_are_listed_newest_first_and_can_be_renamed_and_deleted(chat_page):
    page = chat_page
    send(page, "first topic")
    wait_for_status(answers(page).last, "complete")
    page.get_by_role("button", name="New chat").click()
    expect(page.locator(".message")).to_have_count(0)
    send(page, "second topic")
    wait_for_status(answers(page).last, "complete")
    items = page.locator(".conversation")
    expect(items).to_have_text(["second topic", "first topic"])

    items.nth(1).click()
    expect(page.locator(".message-user .message-body")).to_have_text(["first topic"])
    page.get_by_role("button", name="Rename").click()
    page.get_by_label("Conversation title").fill("Renamed topic")
    page.get_by_label("Conversation title").press("Enter")
    expect(items).to_have_text(["Renamed topic", "second topic"])
    expect(page.locator("#chat-title")).to_have_text("Renamed topic")

    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("group", name="Confirm deletion").get_by_role("button", name="Delete").click()

    expect(items).to_have_text(["second topic"])
    expect(page.locator(".message-user .message-body")).to_have_text(["second topic"])
    assert [c["title"] for c in api_conversations(page)] == ["second topic"]


def test_on_a_narrow_screen_the_conversation_list_is_a_drawer(chat_page):
    page = chat_page
    page.set_viewport_size({"width": 390, "height": 760})
    send(page, "small screen")
    wait_for_status(answers(page).last, "complete")
    sidebar = page.locator("#sidebar")
    expect(sidebar).not_to_be_visible()
    toggle = page.get_by_role("button", name="Chats")

    toggle.click()
    expect(sidebar).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Escape")

    expect(sidebar).not_to_be_visible()
    expect(toggle).to_be_focused()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
