"""The ASGI entry point: HTTP goes to Django, WebSockets to channels consumers (`/ws/ai/chat`).

Starting a server process also sweeps what a dead one left behind (expired reservations, answers
left streaming), as `manage.py sweep_streams` does, and sets the garbage collector for a server
(`tune_the_collector`). Stopping it (SIGTERM) first writes the end of every answer it still generates
(`ai.generations.shutdown`): under daphne from a Twisted "before shutdown" trigger (daphne has no ASGI
lifespan), under uvicorn from the lifespan's shutdown.
"""

import gc
import logging
import os
import sys
import threading

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.urls import path, re_path

from chatsvc.request_threads import RequestThreads

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsvc.settings")

django_application = RequestThreads(get_asgi_application())
logger = logging.getLogger("ai.stream")


def sweep_at_start() -> None:
    """The start-up sweep, in a thread of its own: a server may import this module inside its event
    loop, where the ORM refuses to run. A database not ready yet only postpones it (streams sweep too)."""

    def sweep() -> None:
        from django.db import connection

        from ai.services import streams_sweep

        try:
            reservations, messages = streams_sweep()
        except Exception:
            logger.warning("start-up sweep skipped", exc_info=True)
        else:
            logger.info("start-up sweep: %d reservations, %d messages", reservations, messages)
        finally:
            connection.close()

    thread = threading.Thread(target=sweep, name="start-up sweep")
    thread.start()
    thread.join()


async def lifespan(scope, receive, send) -> None:
    """The ASGI lifespan protocol (uvicorn): nothing to do at start-up; the answers' ends at shutdown."""
    from ai.generations import shutdown

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def end_answers_before_daphne_stops() -> None:
    """Under daphne (its reactor is installed before the application is imported), run the shutdown
    of the answers before the reactor stops."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or "daphne.server" not in sys.modules:
        return
    import asyncio

    from twisted.internet import defer

    from ai.generations import shutdown

    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.Deferred.fromFuture(asyncio.ensure_future(shutdown()))
    )


def tune_the_collector() -> None:
    """CPython's cycle collector, set for a process that keeps thousands of open streams' objects for
    minutes. At CPython's thresholds (700, 10, 10) a full collection — one that walks every object of
    the process, the 110,000 to 170,000 that start-up made included — came every few seconds under
    load, each pausing the event loop and every stream on it for 100–300 ms (`make bench`'s R: 7 in
    15 s, 2.2 s of the reading process's CPU spent collecting). So start-up's objects, which live as
    long as the process, are frozen (`gc.freeze()`: no collection walks them again), and the
    thresholds are `GC_THRESHOLD`: by default a young collection every 2,000 new objects instead of
    700, and a full one after 100 middle ones instead of 10 (and, as CPython does, only once the
    objects that survived the last one have grown by a quarter). The two together: 2 full collections
    in R instead of 7, none in its steady window. Cycles wait longer to be freed; an object no cycle
    holds is freed as before, at once by its count."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*settings.GC_THRESHOLD)


def start_metrics() -> None:
    """The database pool's stats, published for /metrics every few seconds (chatsvc.metrics)."""
    from chatsvc import metrics

    metrics.start_pool_stats_publisher()


sweep_at_start()
end_answers_before_daphne_stops()
start_metrics()

from ai.consumers import ChatConsumer  # noqa: E402 (after Django's set-up)

websocket_urlpatterns = [
    path("ws/ai/chat", ChatConsumer.as_asgi()),
    re_path(r"", WebsocketDenier.as_asgi()),  # any other path: refused, not an error of the router
]


def websocket_application(inner):
    """A socket from a browser (it always sends an `Origin`) must come from an allowed host: a page of
    another site cannot use a visitor's session. A socket without one is not a browser's (Node's `ws`,
    a server): it is let in, but its cookies count for nothing — only a token in a frame's headers."""
    from_a_page = AllowedHostsOriginValidator(AuthMiddlewareStack(inner))

    async def application(scope, receive, send):
        if any(name == b"origin" for name, _ in scope["headers"]):
            return await from_a_page(scope, receive, send)
        headers = [(name, value) for name, value in scope["headers"] if name != b"cookie"]
        return await inner({**scope, "headers": headers}, receive, send)

    return application


application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": websocket_application(URLRouter(websocket_urlpatterns)),
        "lifespan": lifespan,
    }
)
tune_the_collector()  # last: what start-up made is frozen
