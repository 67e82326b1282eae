"""`make screenshot`: docs/screenshot.png, the chat page with an answer being typed.

Not part of the suite (pytest collects `test_*.py` only); run it by its path:
`pytest chatsvc/tests/screenshot.py`. It uses the browser fixtures of `chatsvc/tests/conftest.py`.
"""

import json
import time
from pathlib import Path

import pytest

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"
# A slower typewriter than the default, so the picture catches the answer mid-way.
SLOW_MOCK = json.dumps({"default": {"BACKEND": "ai.adapters.mock.MockAdapter", "OPTIONS": {"delay": 0.12}}})


@pytest.mark.django_db(transaction=True)
def test_screenshot_of_an_answer_being_typed(chromium, asgi_server_factory, django_user_model, log_in):
    django_user_model.objects.create_user(username="demo", password="demo")
    server = asgi_server_factory(AI_ADAPTERS=SLOW_MOCK)
    context = chromium.new_context(
        base_url=server.url, viewport={"width": 1180, "height": 720}, device_scale_factor=1
    )
    page = context.new_page()
    log_in(page, "demo", "demo")

    token = next(c["value"] for c in context.cookies() if c["name"] == "csrftoken")
    for title in ("Planning the vegetable garden", "Notes on the train timetable"):
        page.request.post(
            "/api/conversations/",
            data=json.dumps({"title": title}),
            headers={"Content-Type": "application/json", "X-CSRFToken": token},
        )
    page.get_by_role("button", name="New chat").click()
    box = page.locator("#compose-input")
    box.fill("Hello! What can you tell me about this place?")
    box.press("Enter")
    page.locator(".message-assistant[data-status=complete]").wait_for()
    box.fill("Tell me a little more, please. [mock:chunks=70]")
    box.press("Enter")
    answer = page.locator(".message-assistant").last.locator(".message-body")
    deadline = time.monotonic() + 30
    while len(answer.text_content().split()) < 32:
        assert time.monotonic() < deadline, "the answer did not get far enough"
        time.sleep(0.05)

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOT)
    page.get_by_role("button", name="Stop").click()
    context.close()
