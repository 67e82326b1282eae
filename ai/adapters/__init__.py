"""The AI adapter registry: `adapters[alias]` builds and keeps the backends of `settings.AI_ADAPTERS`."""

from __future__ import annotations

import copy
import threading
from types import SimpleNamespace
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.connection import BaseConnectionHandler
from django.utils.module_loading import import_string

from .base import (
    AdapterError,
    AdapterRateLimited,
    AdapterRefused,
    AdapterStreamBroken,
    AdapterTimeout,
    AdapterUnavailable,
    BaseAdapter,
    ChatMessage,
    Finish,
    InvalidAdapterError,
    Usage,
)

__all__ = [
    "AdapterError",
    "AdapterHandler",
    "AdapterRateLimited",
    "AdapterRefused",
    "AdapterStreamBroken",
    "AdapterTimeout",
    "AdapterUnavailable",
    "BaseAdapter",
    "ChatMessage",
    "Finish",
    "InvalidAdapterError",
    "Usage",
    "adapters",
    "backend_class",
]


def backend_class(alias: str, params: Any) -> type[BaseAdapter]:
    """The BACKEND class of one `AI_ADAPTERS` entry, or `InvalidAdapterError` saying what is wrong.

    The registry, the system check and `AiConfig.ready()` all validate an entry with this function.
    """
    if not isinstance(params, dict):
        raise InvalidAdapterError(f"AI_ADAPTERS[{alias!r}] must be a dict, not {type(params).__name__}.")
    backend = params.get("BACKEND")
    if not isinstance(backend, str) or not backend:
        raise InvalidAdapterError(
            f"AI_ADAPTERS[{alias!r}] needs a BACKEND: the dotted path of an adapter class."
        )
    if not isinstance(params.get("OPTIONS", {}), dict):
        raise InvalidAdapterError(f"AI_ADAPTERS[{alias!r}]['OPTIONS'] must be a dict.")
    try:
        cls = import_string(backend)
    except ImportError as e:
        raise InvalidAdapterError(f"The AI adapter {alias!r} has an unknown BACKEND {backend!r}: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, BaseAdapter)):
        raise InvalidAdapterError(
            f"The BACKEND {backend!r} of the AI adapter {alias!r} is not a subclass of "
            "ai.adapters.base.BaseAdapter."
        )
    return cls


class AdapterHandler(BaseConnectionHandler):
    """`settings.AI_ADAPTERS` as a registry of adapter instances, shaped like Django's `caches`.

    Unlike `caches`, the instances are process-wide. `BaseConnectionHandler` keeps its connections in an
    `asgiref.local.Local`, which (with `thread_critical=False`) is backed by a context variable: a value
    set inside one asyncio task, or one thread, is invisible to its siblings, so every request's task would
    build its own adapter, and the OpenAI adapter's connection pool would never be reused. Adapters are
    safe to share (they keep no per-request state), so they live in one plain namespace per handler,
    created under a lock: one instance per alias per process.
    """

    settings_name = "AI_ADAPTERS"
    exception_class = InvalidAdapterError

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)
        self._connections = SimpleNamespace()
        self._lock = threading.Lock()

    def __getitem__(self, alias: str) -> BaseAdapter:
        if alias not in self.settings:
            configured = ", ".join(map(repr, self.settings)) or "none"
            raise InvalidAdapterError(
                f"The AI adapter {alias!r} is not configured in AI_ADAPTERS (configured: {configured})."
            )
        with self._lock:
            return super().__getitem__(alias)

    def create_connection(self, alias: str) -> BaseAdapter:
        params = copy.deepcopy(self.settings[alias])
        backend = backend_class(alias, params)
        return backend(alias=alias, params=params)

    def reset(self) -> None:
        """Forget the instances and re-read the setting at the next use (the setting changed)."""
        with self._lock:
            self.__dict__.pop("settings", None)
            self._settings = None
            self._connections = SimpleNamespace()


adapters = AdapterHandler()


@receiver(setting_changed)
def reset_adapters(*, setting: str, **kwargs: Any) -> None:
    """Let `override_settings` and pytest-django's `settings` fixture change `AI_ADAPTERS`."""
    if setting == "AI_ADAPTERS":
        adapters.reset()
