"""`OpenAIAdapter`: chat completions streamed from OpenAI or any OpenAI-compatible server (official SDK)."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

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
    Usage,
)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 0
KNOWN_OPTIONS = {
    "model",
    "api_key",
    "base_url",
    "timeout",
    "max_retries",
    "organization",
    "include_usage",
    "extra",
}
RESERVED_PARAMETERS = {"model", "messages", "stream", "stream_options"}


class OpenAIAdapter(BaseAdapter):
    """Streams `chat.completions` through `openai.AsyncOpenAI`.

    Options: `model` (required), `api_key` (empty: the SDK reads `OPENAI_API_KEY`), `base_url` (any
    OpenAI-compatible server; None: OpenAI), `timeout` (seconds, default 60: for the connection and for
    each read, so an upstream silent that long is a timeout), `max_retries` (default 0: a stream fails
    fast with a retryable error and the client decides; the SDK would otherwise wait and retry unseen),
    `organization`, `include_usage` (default True; False for servers that reject `stream_options`), and
    `extra`: more request parameters (`temperature`, `max_tokens`…), sent as they are.

    Usage comes from the final usage chunk; without one it is estimated (`Usage.estimated`) at about four
    characters per token of the context's contents and of the reply.

    One `AsyncOpenAI` client (one connection pool) per adapter and event loop: the pool's connections
    belong to the loop that opened them, and the process's ASGI server runs one loop. Code that runs
    its own short-lived loops (`asyncio.run`, `async_to_sync`) should `await adapter.aclose()` before
    the loop ends, or its pooled connections are left to the garbage collector.
    """

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.model: str = self.options.get("model") or ""
        self.include_usage = bool(self.options.get("include_usage", True))
        extra = self.options.get("extra")
        self.extra: dict[str, Any] = dict(extra) if isinstance(extra, dict) else {}  # check() reports others
        self._api_key: str = self.options.get("api_key") or ""
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )

    def check(self, **kwargs: Any) -> list[CheckMessage]:
        where = f"AI_ADAPTERS[{self.alias!r}]['OPTIONS']"
        messages: list[CheckMessage] = []
        if not isinstance(self.options.get("model"), str) or not self.options["model"]:
            messages.append(Error(f"{where} needs a 'model' (OPENAI_MODEL).", id="ai.E201"))
        timeout = self.options.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            messages.append(Error(f"{where}['timeout'] must be a number of seconds > 0.", id="ai.E202"))
        retries = self.options.get("max_retries", DEFAULT_MAX_RETRIES)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            messages.append(Error(f"{where}['max_retries'] must be an integer >= 0.", id="ai.E203"))
        extra = self.options.get("extra", {})
        if not isinstance(extra, dict) or RESERVED_PARAMETERS & set(extra):
            reserved = ", ".join(sorted(RESERVED_PARAMETERS))
            messages.append(Error(f"{where}['extra'] must be a dict without {reserved}.", id="ai.E204"))
        for name in sorted(set(self.options) - KNOWN_OPTIONS):
            messages.append(Warning(f"{where} has an unknown option {name!r}.", id="ai.W201"))
        if not self._api_key and self.alias == settings.AI_DEFAULT_ADAPTER:
            messages.append(
                Warning(
                    f"The default AI adapter {self.alias!r} has no api_key: set OPENAI_API_KEY.",
                    id="ai.W202",
                )
            )
        return messages

    async def aclose(self) -> None:
        """Close the running event loop's client and its pooled connections (before that loop ends)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            try:
                client = openai.AsyncOpenAI(
                    api_key=self._api_key or None,
                    organization=self.options.get("organization"),
                    base_url=self.options.get("base_url") or None,
                    timeout=float(self.options.get("timeout", DEFAULT_TIMEOUT)),
                    max_retries=int(self.options.get("max_retries", DEFAULT_MAX_RETRIES)),
                )
            except openai.OpenAIError as e:  # no key given and none in the environment
                self._log(e)
                raise AdapterRefused("The AI provider is not configured (no API key).") from e
            self._clients[loop] = client
        return client

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str | Finish]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "stream": True,
        }
        if self.include_usage:
            request["stream_options"] = {"include_usage": True}
        if self.extra:
            request["extra_body"] = self.extra
        try:
            response = await self._client().chat.completions.create(**request)
        except openai.OpenAIError as e:
            raise self._error(e, streaming=False) from e

        text: list[str] = []
        finish_reason: str | None = None
        usage = None
        try:
            async for chunk in response:
                usage = getattr(chunk, "usage", None) or usage
                for choice in (getattr(chunk, "choices", None) or [])[:1]:
                    finish_reason = choice.finish_reason or finish_reason
                    content = choice.delta.content if choice.delta else None
                    if content:
                        text.append(content)
                        yield content
        except openai.OpenAIError as e:
            raise self._error(e, streaming=True) from e
        except (ValueError, TypeError, AttributeError) as e:  # a frame that is not a chat.completion.chunk
            self._log(e)
            raise AdapterStreamBroken("The AI provider's answer could not be read.") from e
        finally:
            await response.close()

        if finish_reason is None:
            logger.warning("AI adapter %r: the stream ended without a finish_reason", self.alias)
            raise AdapterStreamBroken("The AI provider's answer ended before it was finished.")
        if usage is not None:
            prompt, completion = usage.prompt_tokens or 0, usage.completion_tokens or 0
            counted = Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=usage.total_tokens or prompt + completion,
            )
        else:
            counted = self.estimate_usage(messages, "".join(text))
        yield Finish(reason="length" if finish_reason == "length" else "stop", usage=counted)

    def _error(self, error: openai.OpenAIError, *, streaming: bool) -> AdapterError:
        """The user-safe `AdapterError` for an SDK error (its details are logged, the key redacted)."""
        self._log(error)
        if isinstance(error, openai.APITimeoutError):
            return AdapterTimeout()
        if isinstance(error, openai.APIConnectionError):
            return AdapterStreamBroken() if streaming else AdapterUnavailable()
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            if status == 429:
                return AdapterRateLimited()
            if status == 408:
                return AdapterTimeout()
            if 400 <= status < 500 and status != 409:
                return AdapterRefused(f"The AI provider refused the request (HTTP {status}).")
            return AdapterStreamBroken(f"The AI provider failed to answer (HTTP {status}).")
        return AdapterStreamBroken("The AI provider reported an error mid-answer.")

    def _log(self, error: Exception) -> None:
        detail = str(error)[:500]
        if self._api_key:
            detail = detail.replace(self._api_key, "***")
        logger.warning(
            "AI adapter %r: %s (HTTP %s, request id %s): %s",
            self.alias,
            type(error).__name__,
            getattr(error, "status_code", "-"),
            getattr(error, "request_id", None) or "-",
            detail,
        )
