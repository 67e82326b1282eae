"""The web chat page at `/`, driven in a real Chromium against a live daphne on the test database."""

import json
import re
import time
from datetime import datetime

import pytest
from playwright.sync_api import expect

from quota.models import Quota

pytestmark = pytest.mark.django_db(transaction=True)

SLOW_ANSWER = "[mock:chunks=30][mock:delay_ms=50]"
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


def test_stop_interrupts_the_answer_and_the_api_says_interrupted(chat_page):
    page = chat_page
    send(page, "[mock:chunks=400][mock:delay_ms=50] a long one")
    answer = answers(page).last
    expect(answer.locator(".message-body")).to_have_text(re.compile(r"\w+ \w+ \w+"))

    page.get_by_role("button", name="Stop").click()

    wait_for_status(answer, "interrupted")
    expect(answer.locator(".message-note")).to_contain_text("Interrupted")
    expect(compose(page)).to_be_enabled()
    conversation_id = current_conversation_id(page)
    deadline = time.monotonic() + 10
    while (status := api_messages(page, conversation_id)[1]["status"]) == "streaming":
        assert time.monotonic() < deadline, "the answer is still streaming on the server"
        time.sleep(0.1)
    assert status == "interrupted"

    page.reload()
    wait_for_status(answers(page).last, "interrupted")
    expect(answers(page).last.locator(".message-note")).to_contain_text("Interrupted")


def test_an_error_event_is_shown_with_retry_and_retry_sends_again(chat_page):
    page = chat_page
    posts = []
    page.on("request", lambda r: r.url.endswith("/api/ai/chat/stream") and posts.append(r))
    send(page, "[mock:fail_after=2] please")

    first = answers(page).last
    wait_for_status(first, "failed")
    expect(first.get_by_role("alert")).to_contain_text("The mock adapter failed mid-answer")
    expect(first.locator(".message-body")).not_to_have_text("")
    retry = first.get_by_role("button", name="Retry")
    expect(retry).to_be_visible()
    assert len(posts) == 1

    retry.click()

    expect(answers(page)).to_have_count(2)
    wait_for_status(answers(page).last, "failed")
    assert len(posts) == 2
    conversation_id = current_conversation_id(page)
    assert posts[1].post_data_json == {
        "message": "[mock:fail_after=2] please",
        "conversation_id": conversation_id,
    }
    stored = api_messages(page, conversation_id)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "failed"),
        ("user", "complete"),
        ("assistant", "failed"),
    ]


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
