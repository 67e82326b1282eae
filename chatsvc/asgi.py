"""The ASGI entry point: HTTP goes to Django (WebSockets, when there are any, to channels consumers).

Starting a server process also sweeps what a dead one left behind (expired reservations, answers
left streaming), as `manage.py sweep_streams` does.
"""

import logging
import os
import threading

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsvc.settings")

django_application = get_asgi_application()
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


sweep_at_start()

application = ProtocolTypeRouter({"http": django_application})
