"""Project-level views: the web chat page, the health check, the metrics, and JSON error pages for paths
under /api/."""

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.crypto import constant_time_compare
from django.views import defaults
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.decorators import api_view, authentication_classes, permission_classes

from ai import relay
from chatsvc import metrics
from chatsvc.api import error_body

logger = logging.getLogger(__name__)


@require_GET
@login_required
@ensure_csrf_cookie
def index(request):
    """The web chat page; its script talks to the service only through the public API."""
    return render(request, "chatsvc/index.html")


@require_GET
async def healthz(request):
    """200 when every dependency answers (the database; the channels layer when REDIS_URL is set), 503
    naming the one that did not, within the database pool's timeout."""
    checks = {"database": _database_answers()}
    if settings.REDIS_URL:
        checks["channels"] = _channels_answer()
    answers = await asyncio.gather(*(_check(name, check) for name, check in checks.items()))
    body = dict(zip(checks, answers, strict=True))
    healthy = all(answer == "ok" for answer in answers)
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", **body}, status=200 if healthy else 503
    )


async def _check(name: str, check) -> str:
    try:
        async with asyncio.timeout(_health_timeout()):
            await check
    except Exception:
        logger.warning("health check: %s unavailable", name, exc_info=True)
        return "unavailable"
    return "ok"


def _health_timeout() -> float:
    """The pool's wait for a connection (DATABASE_POOL_TIMEOUT), or SQLite's busy timeout."""
    options = settings.DATABASES["default"].get("OPTIONS", {})
    pool = options.get("pool")
    return float(pool.get("timeout", 30) if isinstance(pool, dict) else options.get("timeout", 10))


@sync_to_async(thread_sensitive=False)  # a lost database must not hold up the process's other sync views
def _database_answers() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # this thread is the executor's, not a request's: give the connection back


async def _channels_answer() -> None:
    """A message this process sends to its own channel comes back through the layer."""
    if not await relay.echo():
        raise ConnectionError("no message came back through the channels layer")


@require_GET
def metrics_view(request):
    """Prometheus' text format, for a staff session or `Authorization: Bearer <METRICS_TOKEN>`; with no
    METRICS_TOKEN set and DEBUG on (development), for anyone."""
    refusal = _metrics_refusal(request)
    if refusal is not None:
        return refusal
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)


def _metrics_refusal(request) -> JsonResponse | None:
    token = settings.METRICS_TOKEN
    if settings.DEBUG and not token:
        return None
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        if token and constant_time_compare(credentials.strip(), token):
            return None
        return JsonResponse(error_body("This metrics token is not valid.", "permission_denied"), status=403)
    if request.user.is_authenticated:
        if request.user.is_staff:
            return None
        return JsonResponse(error_body("Metrics are for staff only.", "permission_denied"), status=403)
    if not token:  # only a staff session could read them: there is no token to ask for
        return JsonResponse(error_body("Metrics are for staff only.", "permission_denied"), status=403)
    response = JsonResponse(
        error_body("Send Authorization: Bearer <METRICS_TOKEN>.", "not_authenticated"), status=401
    )
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def _api_error(detail: str, code: str, status: int) -> JsonResponse:
    metrics.http_error(status, code)
    return JsonResponse(error_body(detail, code), status=status)


def bad_request(request, exception=None):
    if _is_api(request):
        return _api_error("Bad request.", "bad_request", 400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _is_api(request):
        return _api_error("Permission denied.", "permission_denied", 403)
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception=None):
    if _is_api(request):
        return _api_error("Not found.", "not_found", 404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        return _api_error("Internal server error.", "internal_error", 500)
    return defaults.server_error(request)


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
@authentication_classes([])
@permission_classes([])
def api_not_found(request, *args, **kwargs):
    """Any unknown path under /api/: a JSON 404, with or without credentials."""
    raise exceptions.NotFound()
