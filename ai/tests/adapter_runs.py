"""Running an adapter to its end from a synchronous test."""

import asyncio

from ai.adapters import AdapterError


def run(adapter, messages):
    """Everything the adapter yields, and the `AdapterError` it ended with (or None).

    Each call runs in an event loop of its own, so the adapter's clients for it are closed at the end.
    """

    async def collect():
        items = []
        try:
            async for item in adapter.stream(messages):
                items.append(item)
        except AdapterError as error:
            return items, error
        finally:
            await adapter.aclose()
        return items, None

    return asyncio.run(collect())
