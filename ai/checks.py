"""System checks of the AI settings (the shape of `AI_ADAPTERS` is also checked in `ready()`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from ai.adapters import InvalidAdapterError, adapters, backend_class
from ai.adapters.mock import MockAdapter


def adapter_setting_errors() -> list[Error]:
    """What is wrong in the shape of `AI_ADAPTERS` (every BACKEND importable) and `AI_DEFAULT_ADAPTER`."""
    config = settings.AI_ADAPTERS
    if not isinstance(config, dict) or not config:
        return [
            Error(
                "AI_ADAPTERS must be a non-empty dict of alias → {'BACKEND': …, 'OPTIONS': {…}}.",
                id="ai.E001",
            )
        ]
    errors = []
    for alias, params in config.items():
        try:
            backend_class(alias, params)
        except InvalidAdapterError as e:
            errors.append(Error(str(e), id="ai.E002"))
    if settings.AI_DEFAULT_ADAPTER not in config:
        default, aliases = settings.AI_DEFAULT_ADAPTER, ", ".join(map(repr, config))
        errors.append(
            Error(
                f"AI_DEFAULT_ADAPTER {default!r} is not an alias of AI_ADAPTERS ({aliases}).",
                id="ai.E003",
            )
        )
    return errors


def check_stream_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The stream's own settings: a context that holds the new message, a keep-alive that waits."""
    errors = []
    if not isinstance(settings.AI_CONTEXT_MESSAGES, int) or settings.AI_CONTEXT_MESSAGES < 1:
        errors.append(Error("AI_CONTEXT_MESSAGES must be a whole number ≥ 1.", id="ai.E004"))
    keepalive = settings.AI_STREAM_KEEPALIVE
    if isinstance(keepalive, bool) or not isinstance(keepalive, int | float) or keepalive <= 0:
        errors.append(Error("AI_STREAM_KEEPALIVE must be a number of seconds > 0.", id="ai.E005"))
    if not isinstance(settings.AI_MAX_MESSAGE_CHARS, int) or settings.AI_MAX_MESSAGE_CHARS < 1:
        errors.append(Error("AI_MAX_MESSAGE_CHARS must be a whole number ≥ 1.", id="ai.E006"))
    if settings.AI_STREAM_ON_DISCONNECT not in ("continue", "interrupt"):
        errors.append(Error("AI_STREAM_ON_DISCONNECT must be 'continue' or 'interrupt'.", id="ai.E007"))
    return errors


def check_adapters(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The setting's errors, then (when it is sound) each adapter's own `check()`."""
    errors: list[CheckMessage] = list(adapter_setting_errors())
    if errors:
        return errors
    for alias in adapters:
        errors.extend(adapters[alias].check(**kwargs))
    return errors


def check_mock_in_production(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """With DEBUG off, the default adapter should not be the mock: it answers anyone with canned text."""
    alias = settings.AI_DEFAULT_ADAPTER
    if settings.DEBUG or adapter_setting_errors():
        return []
    if not issubclass(backend_class(alias, settings.AI_ADAPTERS[alias]), MockAdapter):
        return []
    return [
        Warning(
            f"AI_DEFAULT_ADAPTER {alias!r} is the mock adapter, and DEBUG is off.",
            hint="Point AI_DEFAULT_ADAPTER at a real model (e.g. 'openai' with OPENAI_API_KEY), "
            "or set AI_ADAPTERS without the mock.",
            id="ai.W001",
        )
    ]
