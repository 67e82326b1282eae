from asgiref.sync import sync_to_async
from django import db
from django.apps import AppConfig
from django.core import signals


class ChatsvcConfig(AppConfig):
    """The project as an app: its templates, static files, the `setup_demo` command and its checks."""

    name = "chatsvc"

    def ready(self) -> None:
        from chatsvc.checks import use_for_the_middleware_checks

        use_for_the_middleware_checks()
        signals.request_started.disconnect(db.reset_queries)
        signals.request_started.disconnect(db.close_old_connections)
        signals.request_started.connect(request_started)


async def request_started(**kwargs) -> None:
    """Django's own receivers of `request_started`, on the event loop. Django's are sync: under ASGI each
    request first hopped to a thread to run them (a thread started for it), though a request begins
    with no connection to close (`make bench`: 0.5 CPU ms of an answer's 6). Only a connection this
    request's context does hold is closed, in its thread, as Django does."""
    db.reset_queries()  # no I/O: it empties the connections' logs of queries (DEBUG)
    if any(connection.connection is not None for connection in db.connections.all(initialized_only=True)):
        await sync_to_async(db.close_old_connections)()
