"""What every JSON API under /api/ shares: the error shape and pagination."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, pagination, serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.views import exception_handler as drf_exception_handler

from chatsvc import metrics


def error_body(detail, code: str, **extra) -> dict:
    """The one error shape of the API: `{"detail", "code"}`, plus extra keys such as `errors`."""
    return {"detail": str(detail), "code": code, **extra}


class ServiceUnavailable(exceptions.APIException):
    """503 with a `Retry-After`: the database cannot be reached, or the server is saturated."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "database_unavailable"
    default_detail = "The database cannot be reached; try again shortly."
    retry_after = 5

    def __init__(self, detail=None, code=None):
        super().__init__(detail, code)
        self.wait = self.retry_after  # DRF's handler turns `wait` into `Retry-After`


def exception_handler(exc, context):
    """DRF's handler, with every error answer reshaped to `{"detail", "code"}` and counted."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, OperationalError | InterfaceError):  # the pool's timeout included
        exc = ServiceUnavailable()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # not an API error: Django logs it and answers 500 (see chatsvc.views)
    if isinstance(exc, exceptions.ValidationError):
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body("Invalid input.", "invalid", errors=errors)
    else:
        response.data = error_body(exc.detail, getattr(exc.detail, "code", exc.default_code))
    metrics.http_error(response.status_code, response.data["code"])
    return response


def error_response(exc, *, authenticate_header: str):
    """`exc` answered as a DRF view answers it, for a view that does without DRF's dispatch: the API's
    error shape, `WWW-Authenticate: <authenticate_header>` on a 401, `Retry-After` where it applies.
    None when `exc` is no API error (the caller re-raises it: Django answers 500)."""
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        exc.auth_header = authenticate_header
    response = exception_handler(exc, {})
    if response is not None:
        response.accepted_renderer, response.accepted_media_type = JSONRenderer(), "application/json"
        response.renderer_context = {}
        response.render()
    return response


EMPTY_BODY = "The request body is empty; send a JSON object."


class JSONBodyMixin:
    """For an API view whose unsafe methods take a JSON object: the body's checks, done before any other.

    DRF alone answers a body-less request, or one without a `Content-Type`, as if `{}` had been sent;
    the contract wants 415 for a missing or non-JSON content type and 400 for an empty body.
    """

    body_methods = frozenset({"POST", "PUT", "PATCH"})

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication and permissions first: 401 wins
        method = request.method.lower()
        if request.method in self.body_methods and method in self.http_method_names and hasattr(self, method):
            if request.negotiator.select_parser(request, request.parsers) is None:
                raise exceptions.UnsupportedMediaType(request.content_type)
            if request.stream is None:
                raise exceptions.ValidationError(EMPTY_BODY)


class JSONStringField(serializers.CharField):
    """A `CharField` that takes a JSON string only: DRF's would turn `5` into `"5"`."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class PageNumberPagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
