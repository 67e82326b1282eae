"""The contract's stream endpoints: start an answer (`POST /api/ai/chat/stream`), read it again
(`GET /api/ai/chat/stream/<id>`) and stop it (`POST /api/ai/chat/stream/<id>/stop`)."""

import asyncio
import functools
import io
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from ai import generations, services, sse
from ai.serializers import ChatRequestSerializer, idempotency_key, last_event_id
from chatsvc import metrics
from chatsvc.api import EMPTY_BODY, JSONBodyMixin, error_body, error_response
from chatsvc.authentication import Remembered, RememberingTokenAuthentication, TokenAuthentication
from conversations import selectors
from conversations.api.serializers import MessageSerializer
from conversations.api.views import StreamInProgressError
from conversations.models import Conversation, Message
from conversations.services import NothingToRegenerate, StreamInProgress
from quota.exceptions import ConditionFailed, QuotaExceeded


class QuotaExceededError(exceptions.APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "quota_exceeded"

    def __init__(self, error: QuotaExceeded):
        super().__init__(str(error))
        self.wait = error.retry_after  # DRF's handler turns `wait` into `Retry-After`


class AdapterUnavailableError(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "adapter_unavailable"


class NothingToRegenerateError(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "nothing_to_regenerate"
    default_detail = "This conversation has no user message to answer again."


class IdempotencyKeyMismatchError(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_mismatch"
    default_detail = "This Idempotency-Key was used for a request with another body."


class JSONErrorsNegotiation(DefaultContentNegotiation):
    """Errors are JSON whatever the client accepts (`Accept: text/event-stream` included)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def start_answer(*, user, auth, **request) -> services.StreamStart | services.Retry:
    """`services.stream_start()` with its domain errors as the API's. Shared by every transport's start
    (the contract's stream, the AI SDK's chat); its caller spawns the owner of a started answer on the
    event loop (`generations.owned_once_started`). `auth`: the request's (`request.auth`, None for a
    socket's); a `Remembered` token is checked again by the start's reservation."""
    only_if = auth.still_valid() if isinstance(auth, Remembered) else None
    try:
        started = services.stream_start(user=user, only_if=only_if, **request)
    except ConditionFailed:
        raise exceptions.AuthenticationFailed() from None  # the token went between two reads of it
    except Conversation.DoesNotExist:
        raise exceptions.NotFound() from None
    except services.IdempotencyKeyMismatch:
        raise IdempotencyKeyMismatchError from None
    except StreamInProgress:
        raise StreamInProgressError from None
    except NothingToRegenerate:
        raise NothingToRegenerateError from None
    except services.AdapterNotConfigured as error:
        raise AdapterUnavailableError(str(error)) from None
    except QuotaExceeded as error:
        metrics.quota_refused(error.resource)
        raise QuotaExceededError(error) from None
    return started


OVERLOADED_RETRY_AFTER = 5  # seconds


@functools.cache
def _start_slots() -> tuple[asyncio.Semaphore, ThreadPoolExecutor]:
    """As many starts at once as the database pool can serve, with a quarter of it left for the
    answers' heartbeats and ends (SQLite: a few; its writes take turns anyway)."""
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    size = max(1, pool["max_size"] * 3 // 4) if isinstance(pool, dict) else 4
    return asyncio.Semaphore(size), ThreadPoolExecutor(size, thread_name_prefix="start")


def admitted(view_class: type["StartView"]):
    """The view of `view_class` (a `StartView`) as an async view whose requests wait for their turn in
    the event loop, at most as many in a thread at once as there are database connections for them —
    not a thread each racing the pool's timeout. A request that would wait longer than
    `AI_START_QUEUE_TIMEOUT` is refused at once, before anything is read, stored or reserved:
    503 `overloaded` with `Retry-After`. In its thread, the request is served by `token_fast_path`."""

    view = token_fast_path(view_class)
    run = _closing_connection(view)

    @functools.wraps(view)
    async def admitted_view(request, *args, **kwargs):
        slots, executor = _start_slots()
        try:
            await asyncio.wait_for(slots.acquire(), settings.AI_START_QUEUE_TIMEOUT)
        except TimeoutError:
            metrics.http_error(503, "overloaded")
            body = error_body("The service is saturated; try again shortly.", "overloaded")
            return JsonResponse(body, status=503, headers={"Retry-After": str(OVERLOADED_RETRY_AFTER)})
        work = asyncio.ensure_future(
            sync_to_async(run, thread_sensitive=False, executor=executor)(request, *args, **kwargs)
        )
        work.add_done_callback(lambda _: slots.release())  # once the thread is done, hang-up or not
        return await generations.owned_once_started(work)

    return admitted_view


def token_fast_path(view_class: type["FastView"]):
    """The view of `view_class`, its common request served without DRF's dispatch: one it `takes()`
    with `Authorization: Token`. DRF's request, negotiation, parsers and handler cost 0.9 of an
    answer's 5.5 CPU ms (`make bench`); here the token is read, and errors answered, as DRF does
    (`chatsvc.api.error_response`), and `view_class.served()` does the work either way. Any other
    request (a session's, another method or content type) goes through DRF."""
    through_drf = view_class.as_view()
    authentication = view_class.token_authentication()
    token = f"{authentication.keyword} "

    @csrf_exempt  # as DRF's views are: a token carries no CSRF token (DRF checks a session's)
    @functools.wraps(through_drf)
    def view(request, *args, **kwargs):
        if not view_class.takes(request) or not request.META.get("HTTP_AUTHORIZATION", "").startswith(token):
            return through_drf(request, *args, **kwargs)
        try:
            request.user, request.auth = authentication.authenticate(request)  # as DRF sets them
            return view_class.served(request, *args, **kwargs)
        except Exception as error:
            response = error_response(error, authenticate_header=authentication.keyword)
            if response is None:
                raise
            return response

    return view


def reading(view_class: type["FastView"]):
    """The view of `view_class` (one that checks a read of an answer) as an async view: its checks run
    in the loop's shared threads (not a thread per request: thousands of readers reattach at once
    after a deploy), served by `token_fast_path`; then a `Reading` it returns opens the answer's events
    on the event loop — no thread waits for the owner's reply."""
    view = token_fast_path(view_class)
    run = _closing_connection(view)

    @functools.wraps(view)
    async def reading_view(request, *args, **kwargs):
        response = await sync_to_async(run, thread_sensitive=False)(request, *args, **kwargs)
        return await response.opened() if isinstance(response, Reading) else response

    return reading_view


class Reading(HttpResponse):
    """A read of an answer that passed its checks: `opened()` is its stream, or this 204 when no process
    keeps the answer's events."""

    def __init__(self, answer_id, *, after: int, anywhere: bool) -> None:
        super().__init__(status=status.HTTP_204_NO_CONTENT)
        self.answer_id, self.after, self.anywhere = answer_id, after, anywhere

    async def opened(self) -> HttpResponse:
        events = await generations.answer_open(self.answer_id, after=self.after, anywhere=self.anywhere)
        return self if events is None else sse.response(sse.frames(events))


def _closing_connection(view):
    def run(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        finally:
            connection.close()  # back to the pool: this thread serves the next request

    return run


class StreamView(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONErrorsNegotiation


START_ERRORS = {  # what refuses a start, whatever its transport
    409: OpenApiResponse(description="An answer of the conversation is streaming; nothing to regenerate."),
    429: OpenApiResponse(description="Quota exhausted; `Retry-After` gives the seconds until reset."),
    503: OpenApiResponse(
        description="The conversation's adapter is no longer configured; the database cannot be reached; "
        "the server is saturated (`adapter_unavailable`, `database_unavailable`, `overloaded`)."
    ),
}
STREAM_RESPONSE = OpenApiResponse(
    OpenApiTypes.STR,
    description="Server-Sent Events: `start`, `chunk`…, then `done` or `error` (docs/api.md).",
)


class FastView(StreamView):
    """A view of one method whose requests with a token `token_fast_path` serves without DRF's
    dispatch (authenticated by `token_authentication`): `served()` answers them, whichever dispatched
    them (its `request.user` and `request.auth` are set)."""

    method = "GET"
    token_authentication = TokenAuthentication

    @classmethod
    def takes(cls, request) -> bool:
        return request.method == cls.method

    @staticmethod
    def served(request, **kwargs) -> HttpResponse:
        raise NotImplementedError


class StartView(JSONBodyMixin, FastView):
    """A view that starts an answer from a JSON body (served by `admitted`): `start()` is its work,
    `start_answer(auth=request.auth)` its start."""

    method = "POST"
    token_authentication = RememberingTokenAuthentication

    @classmethod
    def takes(cls, request) -> bool:
        return request.method == cls.method and request.content_type == "application/json"

    @classmethod
    def served(cls, request) -> HttpResponse:
        """`start()`'s answer. With a token remembered, not read (`request.auth` a `Remembered`), only a
        started answer is given on the memory's word (its reservation checked the token); any other —
        an error, a retry's replay — once the token is read again: a 401 if it no longer holds."""
        try:
            if not request.body:
                raise exceptions.ValidationError(EMPTY_BODY)
            response = cls.start(request.user, JSONParser().parse(io.BytesIO(request.body)), request)
        except Exception:
            _confirm(request.auth)
            raise
        if not isinstance(getattr(response, "started", None), services.StreamStart):
            _confirm(request.auth)
        return response

    @staticmethod
    def start(user, data, request) -> HttpResponse:
        raise NotImplementedError

    def post(self, request):
        return self.start(request.user, request.data, request)


def _confirm(auth) -> None:
    if isinstance(auth, Remembered):
        auth.confirm()


@extend_schema_view(
    post=extend_schema(
        request=ChatRequestSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="1 … 255 printable ASCII characters: a retry with the same key and body "
                "starts nothing and is answered with the first request's answer.",
            )
        ],
        responses={
            (200, "text/event-stream"): STREAM_RESPONSE,
            400: OpenApiResponse(description="Invalid body or Idempotency-Key (`parse_error`, `invalid`)."),
            404: OpenApiResponse(description="The conversation is missing or not the caller's."),
            422: OpenApiResponse(description="The Idempotency-Key was used with another body."),
            **START_ERRORS,
        },
        summary="Send a message and stream the AI's answer",
    ),
)
class ChatStreamView(StartView):
    @staticmethod
    def start(user, data, request):
        serializer = ChatRequestSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        key = idempotency_key(request)
        started = start_answer(user=user, auth=request.auth, idempotency_key=key, **serializer.validated_data)
        if isinstance(started, services.Retry):
            return sse.response(sse.frames(generations.answer_replay(started.answer_id)))
        response = sse.response(sse.frames(generations.first_reading(started.answer_id)))
        response.started = started  # its owner is spawned on the event loop by `admitted`
        return response


def stop(answer_id) -> bool:
    """`generations.answer_stop()` from a view's thread, its database connection given back first:
    none is held while the owner confirms."""
    connection.close()
    return async_to_sync(generations.answer_stop)(answer_id)


def _answer_or_404(request, message_id) -> Message:
    try:
        return selectors.answer_of(user=request.user, message_id=message_id)
    except Message.DoesNotExist:
        raise exceptions.NotFound() from None


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter(
                "Last-Event-ID", int, OpenApiParameter.HEADER, description="Events after this id."
            ),
            OpenApiParameter(
                "last_event_id", int, description="As the header, for clients that cannot set it."
            ),
        ],
        responses={
            (200, "text/event-stream"): STREAM_RESPONSE,
            204: OpenApiResponse(description="Its events are no longer kept: read the messages API."),
            404: OpenApiResponse(description="No such assistant message of the caller's."),
        },
        summary="Read an answer again: its events after Last-Event-ID, then the live ones",
    ),
)
class AnswerStreamView(FastView):
    def get(self, request, message_id):
        return self.served(request, message_id)

    @staticmethod
    def served(request, message_id):
        after = last_event_id(request)
        answer = _answer_or_404(request, message_id)
        return Reading(answer.pk, after=after, anywhere=_may_be_kept(answer))  # opened by `reading`


def _may_be_kept(answer: Message) -> bool:
    """Whether some process may still keep the answer's events: it runs, or ended within the replay window."""
    if answer.status == Message.Status.STREAMING:
        return answer.updated_at >= _ago(settings.QUOTA_RESERVATION_TTL)
    return answer.updated_at >= _ago(settings.AI_STREAM_REPLAY_TTL)


def _ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


class AnswerStopView(StreamView):
    @extend_schema(
        request=None,
        responses={
            200: MessageSerializer,
            202: OpenApiResponse(
                MessageSerializer, description="Its process did not confirm the stop in time."
            ),
            404: OpenApiResponse(description="No such assistant message of the caller's."),
        },
        summary="Stop an answer, whichever process generates it",
    )
    def post(self, request, message_id):
        answer = _answer_or_404(request, message_id)
        confirmed = True
        if answer.status == Message.Status.STREAMING:
            confirmed = stop(answer.pk)
            answer.refresh_from_db()
        code = status.HTTP_200_OK if confirmed else status.HTTP_202_ACCEPTED
        return Response(MessageSerializer(answer).data, status=code)
