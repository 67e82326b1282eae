"""The ASGI entry point: HTTP goes to Django (WebSockets, when there are any, to channels consumers)."""

import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsvc.settings")

application = ProtocolTypeRouter({"http": get_asgi_application()})
