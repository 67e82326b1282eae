"""`GET /metrics`: Prometheus' text format summed over every server process, and who may read it."""

import signal

import httpx
import pytest
from django.db.models import Sum
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from ai.tests.sse_client import events, iter_frames, stream
from conversations.models import Message
from quota.tests.factories import QuotaFactory

pytestmark = pytest.mark.django_db(transaction=True)

METRICS_TOKEN = "metrics-token-for-tests"
QUICK = "[mock:chunks=3][mock:delay_ms=1]"


@pytest.fixture
def http():
    with httpx.Client(timeout=30) as client:
        yield client


def production(settings, **env: str) -> dict[str, str]:
    """A server's settings with DEBUG off; the test's SECRET_KEY, so its sessions are the server's too."""
    return {"DEBUG": "false", "SECRET_KEY": settings.SECRET_KEY, "ALLOWED_HOSTS": "127.0.0.1", **env}


@pytest.fixture
def two_processes(asgi_server_factory, settings, tmp_path):
    """Two daphne processes of one deployment: one metrics directory, their own for this test."""
    env = production(settings, METRICS_DIR=str(tmp_path / "metrics"), METRICS_TOKEN=METRICS_TOKEN)
    servers = [asgi_server_factory(fresh=True, **env) for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


def scrape(http, server, **headers) -> dict[tuple[str, tuple], float]:
    """`/metrics` read with the token: {(sample name, sorted labels): value}."""
    response = http.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}", **headers}
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def samples_of(samples: dict, name: str) -> dict[tuple, float]:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def session_of(user) -> dict[str, str]:
    """A session of `user` in the shared database, as a request's headers."""
    client = Client()
    client.force_login(user)
    return {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}


def test_http_errors_are_counted_by_status_and_code_across_both_processes(two_processes, http, token):
    first, second = two_processes
    auth = {"Authorization": f"Token {token.key}"}
    for _ in range(2):
        assert http.get(f"{first.url}/api/conversations/999999/", headers=auth).status_code == 404
    assert http.get(f"{second.url}/api/conversations/").status_code == 401
    broken = http.post(
        f"{second.url}/api/ai/chat/stream", content=b"{", headers={**auth, "Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    for server in two_processes:  # answers are not errors
        assert events(http, server.url, token.key, {"message": f"hello {QUICK}"})[-1].type == "done"

    for server in two_processes:
        errors = samples_of(scrape(http, server), "chatsvc_http_errors_total")
        assert errors == {
            (("code", "not_found"), ("status", "404")): 2,
            (("code", "not_authenticated"), ("status", "401")): 1,
            (("code", "parse_error"), ("status", "400")): 1,
        }


def test_answers_are_counted_by_adapter_and_outcome_across_both_processes(
    two_processes, http, token, other_user
):
    first, second = two_processes
    auth = {"Authorization": f"Token {token.key}"}
    for server in (first, first, second):
        assert events(http, server.url, token.key, {"message": f"hello {QUICK}"})[-1].type == "done"
    failing = {"message": "[mock:chunks=3][mock:delay_ms=1][mock:fail_after=1]"}
    assert events(http, second.url, token.key, failing)[-1].data["code"] == "adapter_error"
    with stream(http, first.url, token.key, {"message": "[mock:chunks=500][mock:delay_ms=20]"}) as response:
        frames = iter_frames(response)
        answer_id = next(frames).data["message_id"]
        assert next(frames).type == "chunk"
        live = scrape(http, second)  # the other process sees the first's gauges
        assert live[("chatsvc_answers_in_progress", (("adapter", "default"),))] == 1
        assert live[("chatsvc_answer_readers", ())] == 1
        assert http.post(f"{first.url}/api/ai/chat/stream/{answer_id}/stop", headers=auth).status_code == 200
        assert [frame.type for frame in frames if frame.data][-1] == "done"
    QuotaFactory(user=other_user, request_limit=0)
    refused = stream(http, second.url, Token.objects.create(user=other_user).key, {"message": "hi"})
    with refused as response:
        assert response.status_code == 429

    samples = scrape(http, first)

    default = ("adapter", "default")
    assert samples_of(samples, "chatsvc_answers_total") == {
        (default, ("outcome", "complete")): 3,
        (default, ("outcome", "failed:adapter_error")): 1,
        (default, ("outcome", "stopped")): 1,
    }
    assert samples[("chatsvc_answers_in_progress", (default,))] == 0
    assert samples[("chatsvc_answer_readers", ())] == 0
    assert samples[("chatsvc_answer_seconds_count", (default,))] == 5
    assert samples[("chatsvc_first_chunk_seconds_count", (default,))] == 5  # each sent a chunk
    assert samples[("chatsvc_first_chunk_seconds_bucket", (default, ("le", "+Inf")))] == 5
    usage = Message.objects.filter(role=Message.Role.ASSISTANT).aggregate(
        prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
    )
    assert samples_of(samples, "chatsvc_tokens_total") == {
        (default, ("kind", "completion")): usage["completion"],
        (default, ("kind", "prompt")): usage["prompt"],
    }
    assert samples_of(samples, "chatsvc_quota_refusals_total") == {(("resource", "requests"),): 1}
    assert samples_of(samples, "chatsvc_http_errors_total") == {
        (("code", "quota_exceeded"), ("status", "429")): 1
    }


def test_database_pool_stats_are_summed_over_the_processes(two_processes, http):
    samples = scrape(http, two_processes[0])

    # Each test server's pool may open 8 connections (the root conftest's DATABASE_POOL_MAX_SIZE).
    assert samples[("chatsvc_db_pool_max", ())] == 16
    assert samples[("chatsvc_db_pool_size", ())] >= 2  # each has opened its pool (start-up sweep)
    assert samples[("chatsvc_db_pool_requests_total", ())] >= 2
    for name in (
        "chatsvc_db_pool_available",
        "chatsvc_db_pool_requests_waiting",
        "chatsvc_db_pool_requests_queued_total",
        "chatsvc_db_pool_wait_seconds_total",
        "chatsvc_db_pool_request_errors_total",
        "chatsvc_db_pool_connection_errors_total",
        "chatsvc_db_pool_connections_lost_total",
    ):
        assert (name, ()) in samples


def test_a_killed_process_leaves_the_gauges_and_its_counts_stay(two_processes, http):
    first, second = two_processes
    assert http.get(f"{second.url}/api/conversations/").status_code == 401
    second.stop(signal.SIGKILL)  # no clean-up at exit: the scrape notices it is gone

    samples = scrape(http, first)

    assert samples[("chatsvc_db_pool_max", ())] == 8
    assert samples_of(samples, "chatsvc_http_errors_total") == {
        (("code", "not_authenticated"), ("status", "401")): 1
    }


def test_metrics_need_the_token_or_a_staff_session(
    asgi_server_factory, settings, http, user, django_user_model
):
    server = asgi_server_factory(**production(settings, METRICS_TOKEN=METRICS_TOKEN))
    url = f"{server.url}/metrics"
    staff = django_user_model.objects.create_user(username="operator", password="x", is_staff=True)

    anonymous = http.get(url)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.json()["code"] == "not_authenticated"
    assert http.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert http.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}x"}).status_code == 403
    assert http.get(url, headers=session_of(user)).status_code == 403
    assert http.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 200
    assert http.get(url, headers={"Authorization": f"bearer {METRICS_TOKEN}"}).status_code == 200
    staff_answer = http.get(url, headers=session_of(staff))
    assert staff_answer.status_code == 200
    assert "chatsvc_db_pool_max" in staff_answer.text


def test_metrics_without_a_token_are_for_staff_only_when_debug_is_off(
    asgi_server_factory, settings, http, user, django_user_model
):
    server = asgi_server_factory(**production(settings))
    url = f"{server.url}/metrics"
    staff = django_user_model.objects.create_user(username="operator", password="x", is_staff=True)

    assert http.get(url).status_code == 403
    assert http.get(url, headers={"Authorization": "Bearer"}).status_code == 403
    assert http.get(url, headers={"Authorization": "Bearer none"}).status_code == 403
    assert http.get(url, headers=session_of(user)).status_code == 403
    assert http.get(url, headers=session_of(staff)).status_code == 200


def test_metrics_are_open_in_development_without_a_token(asgi_server_factory, http):
    server = asgi_server_factory(DEBUG="true")

    response = http.get(f"{server.url}/metrics")

    assert response.status_code == 200
    assert "chatsvc_answer_readers" in response.text


def test_metrics_enabled_false_counts_nothing(asgi_server_factory, settings, tmp_path, http, token):
    env = production(
        settings, METRICS_DIR=str(tmp_path / "off"), METRICS_TOKEN=METRICS_TOKEN, METRICS_ENABLED="false"
    )
    server = asgi_server_factory(fresh=True, **env)
    try:
        frames = events(http, server.url, token.key, {"message": QUICK})
        http.get(f"{server.url}/api/nowhere", headers={"Authorization": f"Token {token.key}"})
        samples = scrape(http, server)
    finally:
        server.stop()
    assert frames[-1].type == "done"
    assert samples_of(samples, "chatsvc_answers_total") == {}
    assert samples_of(samples, "chatsvc_http_errors_total") == {}


def test_a_process_forgets_a_dead_ones_gauges_while_another_removes_them_too(tmp_path, monkeypatch):
    """Two processes starting at once both sweep the gauge files a dead process left: a file the other
    removed between the listing and the removal is no error (it crashed the start before)."""
    from prometheus_client import multiprocess

    from chatsvc import metrics

    monkeypatch.setattr(metrics, "METRICS_DIR", str(tmp_path))
    left = tmp_path / "gauge_livesum_999999.db"
    left.write_bytes(b"")
    listed = multiprocess.glob.glob
    vanished = [str(tmp_path / "gauge_liveall_999999.db")]  # listed, then removed by the other process

    def glob_with_a_file_the_other_removed(pattern):
        found = listed(pattern)
        if vanished and "liveall" in pattern:
            found.append(vanished.pop())
        return found

    monkeypatch.setattr(multiprocess.glob, "glob", glob_with_a_file_the_other_removed)
    metrics.forget_process(999999)
    assert not vanished  # the vanished file was listed
    assert not left.exists()
