"""LOG_FORMAT: readable text lines by default; `json` makes every log line one JSON object."""

import json
import re

import httpx
import pytest

from ai.tests.sse_client import events

LINES = """
import logging
logging.getLogger("ai.stream").info(
    "stream user=alice outcome=complete", extra={"user": "alice", "outcome": "complete", "tokens": None}
)
logging.getLogger("django.request").warning("Not Found: /api/nothing")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("chatsvc").exception("it broke")
"""


def test_json_lines_carry_time_level_logger_message_and_the_extra_fields(run_django):
    result = run_django(LINES, LOG_FORMAT="json", DEBUG="true")

    assert result.returncode == 0, result.stderr
    stream, request, error = (json.loads(line) for line in result.stderr.splitlines())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", stream["time"])
    assert {key: value for key, value in stream.items() if key != "time"} == {
        "level": "INFO",
        "logger": "ai.stream",
        "message": "stream user=alice outcome=complete",
        "user": "alice",
        "outcome": "complete",
        "tokens": None,
    }
    assert (request["level"], request["logger"], request["message"]) == (
        "WARNING",
        "django.request",
        "Not Found: /api/nothing",
    )
    assert error["level"] == "ERROR"
    assert error["exc_info"].startswith("Traceback")
    assert "ZeroDivisionError" in error["exc_info"]


def test_text_is_the_default_and_each_line_is_written_once(run_django):
    result = run_django(LINES, DEBUG="true")  # DEBUG: Django's own console handler would print it twice

    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert re.fullmatch(r"\S+ \S+ INFO ai\.stream stream user=alice outcome=complete", lines[0])
    assert re.fullmatch(r"\S+ \S+ WARNING django\.request Not Found: /api/nothing", lines[1])
    assert re.fullmatch(r"\S+ \S+ ERROR chatsvc it broke", lines[2])
    assert lines[3] == "Traceback (most recent call last):"
    assert sum("Not Found" in line for line in lines) == 1


def test_an_unknown_log_format_stops_start_up_with_a_clear_message(run_django):
    result = run_django("", LOG_FORMAT="yaml")

    assert result.returncode != 0
    assert "LOG_FORMAT must be 'text' or 'json', not 'yaml'." in result.stderr


# daphne's access log (NCSA lines on stdout) is daphne's own, not Python logging: `daphne -v 0` drops it.
# uvicorn's goes through Python logging, so under uvicorn every line is JSON.
DAPHNE_ACCESS_LINE = re.compile(r'^127\.0\.0\.1:\d+ - - \[[^\]]+\] "[A-Z]+ \S+" \d{3} \d+$')


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server_name", ["daphne", "uvicorn"])
def test_a_live_server_logs_its_lines_and_the_stream_line_as_json(asgi_server_factory, token, server_name):
    server = asgi_server_factory(server_name, fresh=True, LOG_FORMAT="json", LOG_LEVEL="INFO")
    with httpx.Client(timeout=30) as client:
        assert events(client, server.url, token.key, {"message": "hi [mock:chunks=2]"})[-1].type == "done"
        assert client.get(f"{server.url}/api/nothing").status_code == 404
    server.stop()

    lines = server.log().splitlines()
    if server_name == "daphne":
        lines = [line for line in lines if not DAPHNE_ACCESS_LINE.match(line)]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    stream = next(record for record in records if record["logger"] == "ai.stream" and "outcome" in record)
    assert stream["outcome"] == "complete"
    assert stream["user"] == "alice"
    assert stream["chunks"] == 2
    assert "django.request" in {record["logger"] for record in records}
    if server_name == "uvicorn":
        assert "uvicorn.access" in {record["logger"] for record in records}
