"""The ASGI entry point: HTTP goes to Django (WebSockets, when there are any, to channels consumers).

Starting a server process also sweeps what a dead one left behind (expired reservations, answers
left streaming), as `manage.py sweep_streams` does.
"""

import logging
import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsvc.settings")

django_application = get_asgi_application()


def sweep_at_start() -> None:
    from django.db import DatabaseError, connection

    from ai.services import streams_sweep

    try:
        reservations, messages = streams_sweep()
    except DatabaseError:
        logging.getLogger("ai.stream").warning("start-up sweep skipped: the database is not ready")
    else:
        logging.getLogger("ai.stream").info(
            "start-up sweep: %d expired reservations deleted, %d messages interrupted", reservations, messages
        )
    finally:
        connection.close()


sweep_at_start()

application = ProtocolTypeRouter({"http": django_application})
