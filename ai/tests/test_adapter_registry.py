"""The adapter registry `ai.adapters.adapters`, its reset on setting changes, and the AI_ADAPTERS checks."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured

from ai.adapters import InvalidAdapterError, adapters
from ai.adapters.mock import MockAdapter
from ai.adapters.openai import OpenAIAdapter
from ai.checks import check_adapters

MOCK = "ai.adapters.mock.MockAdapter"
OPENAI = "ai.adapters.openai.OpenAIAdapter"


@pytest.fixture
def two_adapters(settings):
    settings.AI_ADAPTERS = {
        "fast": {"BACKEND": MOCK, "OPTIONS": {"delay": 0}},
        "gpt": {
            "BACKEND": OPENAI,
            "OPTIONS": {"model": "gpt-test", "api_key": "sk-test", "extra": {"top_p": 1}},
        },
    }
    settings.AI_DEFAULT_ADAPTER = "fast"
    return settings


def ids(messages):
    return [message.id for message in messages]


def test_adapters_builds_each_alias_with_its_backend_and_options(two_adapters):
    assert list(adapters) == ["fast", "gpt"]
    assert isinstance(adapters["fast"], MockAdapter)
    assert adapters["fast"].alias == "fast"
    assert adapters["fast"].options == {"delay": 0}
    assert isinstance(adapters["gpt"], OpenAIAdapter)
    assert adapters["gpt"].model == "gpt-test"


def test_adapter_options_are_a_copy_of_the_setting(two_adapters):
    adapters["gpt"].options["extra"]["top_p"] = 0
    adapters["fast"].options["delay"] = 5
    assert two_adapters.AI_ADAPTERS["gpt"]["OPTIONS"]["extra"] == {"top_p": 1}
    assert two_adapters.AI_ADAPTERS["fast"]["OPTIONS"] == {"delay": 0}


def test_adapters_keeps_one_instance_per_alias_across_tasks_and_threads(two_adapters):
    async def from_tasks():
        return await asyncio.gather(*(asyncio.create_task(_get("fast")) for _ in range(3)))

    async def _get(alias):
        return adapters[alias]

    from_async = asyncio.run(from_tasks())  # built inside a task first: an asgiref Local would not share it
    with ThreadPoolExecutor(max_workers=3) as pool:
        from_threads = list(pool.map(lambda _: adapters["fast"], range(3)))
    assert {id(adapter) for adapter in [*from_async, *from_threads, adapters["fast"]]} == {id(from_async[0])}


def test_unknown_alias_is_a_clear_invalid_adapter_error(two_adapters):
    with pytest.raises(
        InvalidAdapterError, match=r"'nope' is not configured in AI_ADAPTERS \(configured: 'fast'"
    ):
        adapters["nope"]
    assert issubclass(InvalidAdapterError, ImproperlyConfigured)


def test_unknown_backend_is_an_invalid_adapter_error_naming_alias_and_backend(settings):
    settings.AI_ADAPTERS = {"broken": {"BACKEND": "ai.adapters.nowhere.Adapter"}}
    with pytest.raises(
        InvalidAdapterError, match=r"'broken' has an unknown BACKEND 'ai.adapters.nowhere.Adapter'"
    ) as e:
        adapters["broken"]
    assert isinstance(e.value.__cause__, ImportError)


def test_a_backend_that_is_not_a_base_adapter_is_refused(settings):
    settings.AI_ADAPTERS = {"odd": {"BACKEND": "collections.OrderedDict"}}
    with pytest.raises(InvalidAdapterError, match=r"is not a subclass of ai\.adapters\.base\.BaseAdapter"):
        adapters["odd"]


def test_changing_ai_adapters_resets_the_registry(settings):
    settings.AI_ADAPTERS = {"default": {"BACKEND": MOCK, "OPTIONS": {"delay": 1}}}
    before = adapters["default"]
    settings.AI_ADAPTERS = {"default": {"BACKEND": MOCK, "OPTIONS": {"delay": 2}}, "other": {"BACKEND": MOCK}}
    assert adapters["default"] is not before
    assert adapters["default"].options == {"delay": 2}
    assert list(adapters) == ["default", "other"]


def test_system_check_accepts_a_sound_configuration(two_adapters):
    assert check_adapters() == []


@pytest.mark.parametrize(
    ("config", "default", "expected_id", "text"),
    [
        ([], "default", "ai.E001", "must be a non-empty dict"),
        ({}, "default", "ai.E001", "must be a non-empty dict"),
        ({"default": "ai.adapters.mock.MockAdapter"}, "default", "ai.E002", "must be a dict, not str"),
        ({"default": {"OPTIONS": {}}}, "default", "ai.E002", "needs a BACKEND"),
        ({"default": {"BACKEND": MOCK, "OPTIONS": []}}, "default", "ai.E002", "'OPTIONS'] must be a dict"),
        ({"default": {"BACKEND": "nope.Adapter"}}, "default", "ai.E002", "unknown BACKEND 'nope.Adapter'"),
        ({"default": {"BACKEND": "collections.OrderedDict"}}, "default", "ai.E002", "not a subclass"),
        ({"mock": {"BACKEND": MOCK}}, "default", "ai.E003", "AI_DEFAULT_ADAPTER 'default' is not an alias"),
    ],
)
def test_system_check_reports_a_malformed_configuration(settings, config, default, expected_id, text):
    settings.AI_ADAPTERS = config
    settings.AI_DEFAULT_ADAPTER = default
    messages = check_adapters()
    assert ids(messages) == [expected_id]
    assert text in messages[0].msg


def test_system_check_runs_each_adapters_own_check(settings):
    settings.AI_ADAPTERS = {
        "default": {"BACKEND": MOCK, "OPTIONS": {"delay": -1}},
        "gpt": {
            "BACKEND": OPENAI,
            "OPTIONS": {"api_key": "sk-test", "timeout": 0, "extra": {"stream": False}},
        },
    }
    assert ids(check_adapters()) == ["ai.E101", "ai.E201", "ai.E202", "ai.E204"]


def test_system_check_is_registered(settings):
    from django.core import checks

    settings.AI_ADAPTERS = {"default": {"BACKEND": OPENAI, "OPTIONS": {"api_key": "sk-test"}}}
    assert "ai.E201" in ids(checks.run_checks())


@pytest.mark.parametrize(
    ("debug", "default", "warned"),
    [(False, "fast", True), (True, "fast", False), (False, "gpt", False)],
    ids=["production-on-the-mock", "debug-on-the-mock", "production-on-a-model"],
)
def test_system_check_warns_when_production_answers_with_the_mock(two_adapters, debug, default, warned):
    from django.core import checks

    two_adapters.DEBUG = debug
    two_adapters.AI_DEFAULT_ADAPTER = default
    found = [message for message in checks.run_checks() if message.id == "ai.W001"]
    assert [message.level for message in found] == ([checks.WARNING] if warned else [])
    if warned:
        assert "'fast' is the mock adapter" in found[0].msg


def test_start_up_stops_with_a_clear_message_on_an_unknown_backend(settings):
    settings.AI_ADAPTERS = {"default": {"BACKEND": "ai.adapters.typo.Adapter"}}
    with pytest.raises(
        ImproperlyConfigured, match=r"'default' has an unknown BACKEND 'ai.adapters.typo.Adapter'"
    ):
        apps.get_app_config("ai").ready()


@pytest.mark.parametrize(
    ("name", "value", "check_id"),
    [
        ("AI_CONTEXT_MESSAGES", 0, "ai.E004"),
        ("AI_STREAM_KEEPALIVE", 0, "ai.E005"),
        ("AI_STREAM_KEEPALIVE", -1.5, "ai.E005"),
        ("AI_MAX_MESSAGE_CHARS", 0, "ai.E006"),
    ],
)
def test_check_refuses_stream_settings_that_cannot_work(settings, name, value, check_id):
    from ai.checks import check_stream_settings

    assert check_stream_settings() == []
    setattr(settings, name, value)
    assert [error.id for error in check_stream_settings()] == [check_id]
