"""Django's ASGI handler with its requests' threads kept for the next ones (`chatsvc.asgi` serves it)."""

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext

IDLE_REQUEST_THREADS = 64


class RequestThreads:
    """Django's ASGI handler, each request's thread-sensitive work (its sync views, `response.close()`
    at its end) on one thread of its own as Django runs it, but a thread kept for a next request: Django
    starts one per request, and one more to join it at the end (`make bench`: two thread starts of
    every answer's few CPU ms). A request that did not end well gives its thread up rather than lend a
    thread that may still be busy with it; beyond `IDLE_REQUEST_THREADS` idle ones, a thread exits."""

    def __init__(self, application) -> None:
        self.application = application
        self._idle: list[ThreadPoolExecutor] = []

    async def __call__(self, scope, receive, send) -> None:
        executor = self._idle.pop() if self._idle else ThreadPoolExecutor(1, thread_name_prefix="request")
        ended = False
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.application(scope, receive, send)
            ended = True
        finally:
            if ended and len(self._idle) < IDLE_REQUEST_THREADS:
                self._idle.append(executor)
            else:
                executor.shutdown(wait=False)
