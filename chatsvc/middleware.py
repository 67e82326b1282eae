"""Django's stock middleware, with their hooks run on the event loop instead of a thread.

Under ASGI, Django's `MiddlewareMixin` calls every sync `process_request` and `process_response`
through `sync_to_async`, and the handler does the same for every sync `process_view`: a thread hop
apiece, a dozen per request with the stack in settings, each costing more CPU than the hook itself.
These hooks do no I/O (sessions, the user and messages are lazy), so they run inline; where a hook may
reach the database (saving a session, storing messages into it), it still runs in a thread.
"""

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.middleware import clickjacking, csrf, security


class InlineHooks:
    """The async path of `MiddlewareMixin`, without the thread hops."""

    async def __acall__(self, request):
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            if self.response_may_touch_database(request):
                return await sync_to_async(self.process_response)(request, response)
            response = self.process_response(request, response)
        return response

    def response_may_touch_database(self, request) -> bool:
        return False


class SecurityMiddleware(InlineHooks, security.SecurityMiddleware):
    pass


class SessionMiddleware(InlineHooks, sessions.SessionMiddleware):
    def response_may_touch_database(self, request) -> bool:
        # A session never read is never saved, unless every request saves it.
        return request.session.accessed or settings.SESSION_SAVE_EVERY_REQUEST


class CsrfViewMiddleware(InlineHooks, csrf.CsrfViewMiddleware):
    """With `CSRF_USE_SESSIONS` the token lives in the session, in the database: Django's own path.

    The check of a POSTed form reads its token from `request.POST`, which parses the body: a large form,
    or a multipart upload spooled to temporary files, is blocking I/O, so that check runs in a thread.
    """

    async def __acall__(self, request):
        if settings.CSRF_USE_SESSIONS:
            return await csrf.CsrfViewMiddleware.__acall__(self, request)
        return await super().__acall__(request)

    async def process_view(self, request, *view):
        check = super().process_view
        if settings.CSRF_USE_SESSIONS or _has_form_body(request):
            return await sync_to_async(check)(request, *view)
        return check(request, *view)


FORM_CONTENT_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}


def _has_form_body(request) -> bool:
    """Whether reading `request.POST` parses a body (Django parses only these, and only for POST)."""
    return request.method == "POST" and request.content_type in FORM_CONTENT_TYPES


class AuthenticationMiddleware(InlineHooks, auth.AuthenticationMiddleware):
    pass


class MessageMiddleware(InlineHooks, messages.MessageMiddleware):
    def response_may_touch_database(self, request) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


class XFrameOptionsMiddleware(InlineHooks, clickjacking.XFrameOptionsMiddleware):
    pass
