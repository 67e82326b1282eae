"""The ASGI entry point of the bare baseline (`bench.bare_settings`)."""

import os

from django.core.asgi import get_asgi_application

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.bare_settings"

application = get_asgi_application()
