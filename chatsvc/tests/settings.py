"""The settings of a test run: the project's own, on a development machine's environment.

`chatsvc.settings` defaults to DEBUG off, which needs SECRET_KEY and ALLOWED_HOSTS. pytest-django
imports the settings while pytest starts, before any conftest.py is read, so the development default
is set here, in the module pytest.ini names (a variable already in the environment wins). Processes the
tests start inherit it; the live servers say DEBUG=true for themselves (conftest.SERVER_DEFAULTS).
Django's test runner still runs the tests themselves with DEBUG off.
"""

import os

os.environ.setdefault("DEBUG", "true")

from chatsvc.settings import *  # noqa: F403
