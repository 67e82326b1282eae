"""`MockAdapter`: a deterministic, readable stand-in for a model, steered by `[mock:…]` directives."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import random
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from django.core.checks import CheckMessage, Error

from .base import AdapterStreamBroken, BaseAdapter, ChatMessage, Finish, Usage

DEFAULT_CHUNKS = 12
DEFAULT_DELAY = 0.02
# Any user may write directives: larger values are clamped to these, so no answer grows without bound.
MAX_DIRECTIVE = {"chunks": 5000, "fail_after": 5000, "delay_ms": 10_000}

DIRECTIVE = re.compile(r"\[mock:(chunks|delay_ms|fail_after|echo_context)(?:=(\d+))?\]")

SENTENCES = [
    "This is a reply from the mock adapter.",
    "It answers the same question with the same words every time.",
    "The words arrive one by one, like a typewriter.",
    "Nothing here was written by a real model.",
    "Tests can rely on every piece of this answer.",
    "A quiet river runs past the old stone bridge.",
    "The morning train leaves the station at seven.",
    "Good tools make small jobs feel easy.",
    "Every answer ends with a short summary of usage.",
    "The garden is full of bright yellow flowers.",
    "Clear names make code easier to read.",
    "A warm cup of tea helps on a cold day.",
    "The library opens its doors at nine.",
    "Simple plans are often the best ones.",
    "The cat sleeps in a patch of afternoon sun.",
    "Please ask another question whenever you like.",
]


class MockAdapter(BaseAdapter):
    """Answers without a network: the same context always gives the same reply.

    Option `delay`: seconds between two chunks (the typewriter effect; default 0.02).
    Directives, read from the newest user message:
      `[mock:chunks=N]`      reply in N chunks (default 12, at most 5000), one word each;
      `[mock:delay_ms=D]`    D milliseconds between chunks (at most 10000), overriding `delay`;
      `[mock:fail_after=K]`  send exactly K chunks (at most 5000), then fail with an `adapter_error`;
      `[mock:echo_context]`  the reply is `json.dumps` of the context's `{"role", "content"}` list,
                             split into (at most) N chunks.
    Larger values are clamped to those bounds (`MAX_DIRECTIVE`).
    Usage: prompt_tokens = whitespace-separated words of every content, completion_tokens = chunks sent.
    """

    def check(self, **kwargs: Any) -> list[CheckMessage]:
        delay = self.options.get("delay", DEFAULT_DELAY)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            return [
                Error(
                    f"AI_ADAPTERS[{self.alias!r}]['OPTIONS']['delay'] must be a number of seconds >= 0.",
                    id="ai.E101",
                )
            ]
        return []

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str | Finish]:
        directives = _directives(messages)
        chunks = directives.get("chunks", DEFAULT_CHUNKS)
        if "delay_ms" in directives:
            delay = directives["delay_ms"] / 1000
        else:
            delay = float(self.options.get("delay", DEFAULT_DELAY))
        fail_after = directives.get("fail_after")
        if fail_after is not None:
            chunks = fail_after
        if "echo_context" in directives:
            pieces = _split(
                json.dumps([{"role": m["role"], "content": m["content"]} for m in messages]), chunks
            )
        else:
            pieces = _words(_seed(messages), chunks)

        sent = 0
        for piece in pieces:
            if sent and delay:
                await asyncio.sleep(delay)
            yield piece
            sent += 1
        if fail_after is not None:
            raise AdapterStreamBroken("The mock adapter failed mid-answer, as asked ([mock:fail_after]).")
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        yield Finish(
            reason="stop",
            usage=Usage(
                prompt_tokens=prompt_tokens, completion_tokens=sent, total_tokens=prompt_tokens + sent
            ),
        )


def _directives(messages: Sequence[ChatMessage]) -> dict[str, int]:
    """The `[mock:…]` directives of the newest user message, clamped (`echo_context` maps to 0).

    A value too long to be within bounds is not parsed (Python refuses int() of over 4300 digits)."""
    newest = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    found: dict[str, int] = {}
    for name, value in DIRECTIVE.findall(newest):
        if name == "echo_context":
            found[name] = 0
        elif value:
            bound = MAX_DIRECTIVE[name]
            found[name] = min(int(value), bound) if len(value) <= len(str(bound)) else bound
    return found


def _seed(messages: Sequence[ChatMessage]) -> int:
    context = json.dumps([[m["role"], m["content"]] for m in messages])
    return int.from_bytes(hashlib.sha256(context.encode()).digest()[:8], "big")


def _words(seed: int, count: int) -> Iterator[str]:
    """`count` words of sentences picked by `seed`: a space before each but the first, a period at the end."""
    rng = random.Random(seed)
    words: list[str] = []
    for index in range(count):
        if not words:
            words = rng.choice(SENTENCES).split()
        word = words.pop(0)
        if index == count - 1 and not word.endswith("."):
            word += "."
        yield word if index == 0 else " " + word


def _split(text: str, count: int) -> list[str]:
    """`text` in min(count, len(text)) non-empty pieces of near-equal length."""
    count = min(count, len(text))
    if count == 0:
        return []
    size, extra = divmod(len(text), count)
    bounds = [index * size + min(index, extra) for index in range(count + 1)]
    return [text[start:end] for start, end in itertools.pairwise(bounds)]
