"""Django's deployment checks of the stock middleware, run against chatsvc's subclasses of them.

Django finds SecurityMiddleware, CsrfViewMiddleware, SessionMiddleware and XFrameOptionsMiddleware by
their dotted paths in MIDDLEWARE. chatsvc lists its own subclasses (`chatsvc.middleware`), so those
checks would report the middleware missing (security.W001, W002, W003) and then skip HSTS, the SSL
redirect and the secure cookies altogether. `use_for_the_middleware_checks()` puts one check in their
place that runs Django's own functions, with their own ids, on MIDDLEWARE as Django knows it: each
subclass named by the stock class it extends.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.checks.registry import registry
from django.core.checks.security import base, csrf, sessions
from django.utils.module_loading import import_string

STOCK_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Every deployment check of Django 5.2 that looks for one of STOCK_MIDDLEWARE in MIDDLEWARE.
MIDDLEWARE_CHECKS = [
    base.check_security_middleware,
    base.check_xframe_options_middleware,
    base.check_sts,
    base.check_sts_include_subdomains,
    base.check_sts_preload,
    base.check_content_type_nosniff,
    base.check_ssl_redirect,
    base.check_xframe_deny,
    base.check_referrer_policy,
    base.check_cross_origin_opener_policy,
    csrf.check_csrf_middleware,
    csrf.check_csrf_cookie_secure,
    sessions.check_session_cookie_secure,
    sessions.check_session_cookie_httponly,
]


def middleware_as_django_knows_it() -> list[str]:
    """MIDDLEWARE with each subclass of a stock middleware named by that stock middleware."""
    stock = {path: import_string(path) for path in STOCK_MIDDLEWARE}

    def known_as(path: str) -> str:
        cls = import_string(path)
        return next((name for name, base_cls in stock.items() if issubclass(cls, base_cls)), path)

    return [known_as(path) for path in settings.MIDDLEWARE]


def check_middleware_security(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.test.utils import override_settings  # the documented way to see other settings

    with override_settings(MIDDLEWARE=middleware_as_django_knows_it()):
        return [message for check in MIDDLEWARE_CHECKS for message in check(app_configs)]


def use_for_the_middleware_checks() -> None:
    """Replace Django's registrations of MIDDLEWARE_CHECKS with `check_middleware_security`."""
    registry.deployment_checks.difference_update(MIDDLEWARE_CHECKS)
    registry.register(check_middleware_security, checks.Tags.security, deploy=True)
