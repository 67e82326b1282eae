"""The adapter interface: `BaseAdapter`, the types it yields, and the `AdapterError` family."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from django.core.checks import CheckMessage
from django.core.exceptions import ImproperlyConfigured


class InvalidAdapterError(ImproperlyConfigured):
    """`AI_ADAPTERS` names no such alias, or an alias whose entry cannot be built."""


class ChatMessage(TypedDict):
    """One message of the context: `role` is "system", "user" or "assistant"."""

    role: str
    content: str


@dataclass(frozen=True)
class Usage:
    """Token counts of one generation; `estimated` when the upstream did not report them."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: bool = False


@dataclass(frozen=True)
class Finish:
    """The last item an adapter yields: why it stopped ("stop" or "length") and what it cost."""

    reason: str
    usage: Usage


class AdapterError(Exception):
    """A failure of the upstream, told in words safe for end users (no secrets, no upstream bodies).

    `code` and `retryable` are those of the stream's `error` event (API.md, "Streaming chat").
    """

    code = "adapter_error"
    retryable = True
    default_message = "The AI provider failed to answer."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class AdapterStreamBroken(AdapterError):
    """An upstream 5xx, an answer that broke off mid-way, or one that could not be read."""

    default_message = "The AI provider's answer broke off."


class AdapterTimeout(AdapterError):
    """No answer, or no next piece of it, within the adapter's timeout."""

    code = "adapter_timeout"
    default_message = "The AI provider did not answer in time."


class AdapterRateLimited(AdapterError):
    """The upstream answered 429."""

    code = "rate_limited"
    default_message = "The AI provider is rate limiting requests; try again shortly."


class AdapterUnavailable(AdapterError):
    """The upstream server cannot be reached."""

    code = "adapter_unavailable"
    default_message = "The AI provider cannot be reached."


class AdapterRefused(AdapterError):
    """The upstream refused the request (400/401/403/404: bad key, unknown model…); retrying will not help."""

    code = "adapter_refused"
    retryable = False
    default_message = "The AI provider refused the request."


class BaseAdapter(ABC):
    """One configured AI backend, built by the registry from an `AI_ADAPTERS` entry.

    Instances are shared by every stream of the process: keep per-request state in `stream()`.
    """

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        self.alias = alias
        self.options: dict[str, Any] = dict(params.get("OPTIONS") or {})

    @abstractmethod
    def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str | Finish]:
        """An async generator: yields non-empty text deltas (str), then exactly one Finish, then ends.

        It raises an `AdapterError` on failure (possibly after some deltas). Closing it (`aclose()`) or
        cancelling the task iterating it closes its upstream request at once.
        """

    def estimate_usage(self, messages: Sequence[ChatMessage], text: str) -> Usage:
        """The usage of an answer the upstream did not count (it was cut short, or sent no usage):
        about four characters a token, OpenAI's rule of thumb for English text."""
        prompt = math.ceil(len("\n".join(m["content"] for m in messages)) / 4)
        completion = math.ceil(len(text) / 4)
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            estimated=True,
        )

    def check(self, **kwargs: Any) -> list[CheckMessage]:
        """System-check messages about this adapter's options (run by `manage.py check` and start-up)."""
        return []

    async def aclose(self) -> None:  # noqa: B027 (a hook: most adapters hold nothing to close)
        """Release what this adapter holds for the running event loop (its HTTP client, say).

        The registry's instances live as long as the process; code that runs its own short-lived
        loops (`asyncio.run`) awaits this before the loop ends.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} alias={self.alias!r}>"
