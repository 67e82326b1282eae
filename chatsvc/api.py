"""What every JSON API under /api/ shares: the error shape and pagination."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, pagination
from rest_framework.views import exception_handler as drf_exception_handler


def error_body(detail, code: str, **extra) -> dict:
    """The one error shape of the API: `{"detail", "code"}`, plus extra keys such as `errors`."""
    return {"detail": str(detail), "code": code, **extra}


def exception_handler(exc, context):
    """DRF's handler, with every error answer reshaped to `{"detail", "code"}`."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # not an API error: Django logs it and answers 500 (see chatsvc.views)
    if isinstance(exc, exceptions.ValidationError):
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body("Invalid input.", "invalid", errors=errors)
    else:
        response.data = error_body(exc.detail, getattr(exc.detail, "code", exc.default_code))
    return response


class PageNumberPagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
