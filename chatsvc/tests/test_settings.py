"""Settings read from the environment, checked in a fresh process as a deployment starts one."""

import json

import pytest

PRINT_SETTINGS = """
import json
from django.conf import settings
print(json.dumps({name: getattr(settings, name) for name in %r}, default=str))
"""


def settings_in(run_django, names, **env):
    result = run_django(PRINT_SETTINGS % (names,), **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "false", "ALLOWED_HOSTS": "example.com"}, "DEBUG=false needs SECRET_KEY"),
        ({"DEBUG": "false", "SECRET_KEY": "x" * 50}, "DEBUG=false needs ALLOWED_HOSTS"),
        ({"ALLOWED_HOSTS": "chat.example.com"}, "SECRET_KEY must be set when ALLOWED_HOSTS names a host"),
    ],
    ids=["no-secret-key", "no-allowed-hosts", "debug-serving-the-world-with-the-public-key"],
)
def test_production_without_a_required_setting_refuses_to_start(run_django, env, message):
    result = run_django("", **env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_production_with_secret_key_and_hosts_starts(run_django):
    found = settings_in(
        run_django,
        ["DEBUG", "ALLOWED_HOSTS"],
        DEBUG="false",
        SECRET_KEY="x" * 50,
        ALLOWED_HOSTS="a.com,b.com",
    )

    assert found == {"DEBUG": False, "ALLOWED_HOSTS": ["a.com", "b.com"]}


# A deployment behind an HTTPS proxy, as README "Deployment" configures it.
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "k9V-2qLx_7RtZ0pWm4sYc8hN1bJfD6gE3uTaQyXvCoKiMnBlPzHw5r",
    "ALLOWED_HOSTS": "chat.example.com",
    "AI_DEFAULT_ADAPTER": "openai",
    "OPENAI_API_KEY": "sk-test",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
}
CHECK_DEPLOY = """
from django.core.management import call_command
call_command("check", deploy=True, fail_level="WARNING")
"""


def test_debug_is_off_unless_the_environment_turns_it_on(run_django):
    assert settings_in(run_django, ["DEBUG"], DEBUG=None, SECRET_KEY="x" * 50, ALLOWED_HOSTS="a.com") == {
        "DEBUG": False
    }
    result = run_django("", DEBUG=None)
    assert result.returncode != 0
    assert "DEBUG=false needs SECRET_KEY" in result.stderr


def test_a_production_environment_passes_the_deployment_checks(run_django):
    result = run_django(CHECK_DEPLOY, **PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.parametrize(
    ("missing", "warning"),
    [
        ("SECURE_HSTS_SECONDS", "security.W004"),
        ("SECURE_SSL_REDIRECT", "security.W008"),
        ("SESSION_COOKIE_SECURE", "security.W012"),
        ("CSRF_COOKIE_SECURE", "security.W016"),
    ],
)
def test_the_deployment_checks_see_the_projects_middleware(run_django, missing, warning):
    result = run_django(CHECK_DEPLOY, **{**PRODUCTION, missing: None})

    assert result.returncode != 0
    assert warning in result.stderr
    assert "security.W001" not in result.stderr  # chatsvc's SecurityMiddleware counts as Django's


def test_the_proxy_ssl_header_is_a_header_and_a_value(run_django):
    found = settings_in(run_django, ["SECURE_PROXY_SSL_HEADER"], **PRODUCTION)
    assert found == {"SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"]}
    result = run_django("", **{**PRODUCTION, "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO"})
    assert result.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER" in result.stderr


@pytest.mark.parametrize("value", ['{"default": ', "not json", "[1, 2]"], ids=["truncated", "text", "list"])
def test_a_malformed_ai_adapters_refuses_to_start_with_a_clear_message(run_django, value):
    result = run_django("", AI_ADAPTERS=value)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "AI_ADAPTERS" in result.stderr


def test_ai_adapters_from_the_environment_replace_the_defaults(run_django):
    adapters = {"local": {"BACKEND": "ai.adapters.mock.MockAdapter", "OPTIONS": {"delay": 0}}}

    found = settings_in(
        run_django, ["AI_ADAPTERS"], AI_ADAPTERS=json.dumps(adapters), AI_DEFAULT_ADAPTER="local"
    )

    assert found == {"AI_ADAPTERS": adapters}


def test_settings_are_read_from_the_environment(run_django):
    found = settings_in(
        run_django,
        ["QUOTA_DEFAULT_TOKEN_LIMIT", "QUOTA_DEFAULT_REQUEST_LIMIT", "AI_CONTEXT_MESSAGES", "DEBUG"],
        QUOTA_DEFAULT_TOKEN_LIMIT="none",
        QUOTA_DEFAULT_REQUEST_LIMIT="7",
        AI_CONTEXT_MESSAGES="3",
        DEBUG="true",
    )

    assert found == {
        "QUOTA_DEFAULT_TOKEN_LIMIT": None,
        "QUOTA_DEFAULT_REQUEST_LIMIT": 7,
        "AI_CONTEXT_MESSAGES": 3,
        "DEBUG": True,
    }


def test_the_defaults_match_the_contract(run_django):
    found = settings_in(
        run_django,
        ["AI_DEFAULT_ADAPTER", "AI_CONTEXT_MESSAGES", "QUOTA_DEFAULT_TOKEN_LIMIT"],
    )

    assert found == {
        "AI_DEFAULT_ADAPTER": "default",
        "AI_CONTEXT_MESSAGES": 10,
        "QUOTA_DEFAULT_TOKEN_LIMIT": None,
    }


def test_a_number_setting_that_is_not_a_number_refuses_to_start(run_django):
    result = run_django("", QUOTA_DEFAULT_TOKEN_LIMIT="lots")

    assert result.returncode != 0
    assert "QUOTA_DEFAULT_TOKEN_LIMIT" in result.stderr


@pytest.mark.django_db
def test_database_connections_give_up_on_a_lock_or_a_statement_that_waits_too_long():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        (lock_timeout,) = cursor.fetchone()
        cursor.execute("SHOW statement_timeout")
        (statement_timeout,) = cursor.fetchone()

    assert (lock_timeout, statement_timeout) == ("10s", "30s")


def test_database_timeouts_come_from_the_environment_and_the_url_options_win(run_django):
    found = settings_in(
        run_django,
        ["DATABASES"],
        DATABASE_URL="postgres://chat@db:5432/chat?options=-c%20statement_timeout%3D5s",
        DATABASE_LOCK_TIMEOUT="2.5",
        DATABASE_STATEMENT_TIMEOUT="0",
    )

    options = found["DATABASES"]["default"]["OPTIONS"]["options"]
    assert options == "-c lock_timeout=2500 -c statement_timeout=0 -c statement_timeout=5s"


SERVER_COLLECTOR = """
import gc, json
print(json.dumps({"before": gc.get_threshold(), "frozen_before": gc.get_freeze_count()}))
import chatsvc.asgi
urls = chatsvc.asgi.websocket_urlpatterns  # made by the module itself, late in its import
own_frozen = all(o is not urls for o in gc.get_objects())  # frozen: no generation holds it
print(json.dumps({"after": gc.get_threshold(), "frozen": gc.get_freeze_count(), "own_frozen": own_frozen}))
"""


@pytest.mark.parametrize(
    ("env", "threshold"), [({}, [2000, 10, 100]), ({"GC_THRESHOLD": "1500, 7, 42"}, [1500, 7, 42])]
)
def test_a_server_process_freezes_its_start_up_and_sets_the_collector(run_django, tmp_path, env, threshold):
    database = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}  # the start-up sweep's: none here
    result = run_django(SERVER_COLLECTOR, **database, **env)

    assert result.returncode == 0, result.stderr
    before, after = (json.loads(line) for line in result.stdout.strip().splitlines()[-2:])
    assert before == {"before": [700, 10, 10], "frozen_before": 0}  # CPython's, until the server's module
    assert after["after"] == threshold
    assert after["frozen"] > 50_000  # Django's, DRF's, channels' … objects
    assert after["own_frozen"]  # the module's own, made before the freeze at its end


@pytest.mark.parametrize("value", ["2000,10", "a,b,c", "0,10,10", "2000,-1,10", "2000,10,0"])
def test_a_malformed_gc_threshold_refuses_to_start(run_django, value):
    result = run_django("", GC_THRESHOLD=value)

    assert result.returncode != 0
    assert "GC_THRESHOLD must be three whole numbers" in result.stderr
