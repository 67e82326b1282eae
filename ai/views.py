"""The contract's stream endpoints: start an answer (`POST /api/ai/chat/stream`), read it again
(`GET /api/ai/chat/stream/<id>`) and stop it (`POST /api/ai/chat/stream/<id>/stop`)."""

from datetime import timedelta

from asgiref.sync import async_to_sync
from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from ai import generations, services, sse
from ai.serializers import ChatRequestSerializer, idempotency_key, last_event_id
from chatsvc.api import JSONBodyMixin
from conversations import selectors
from conversations.api.serializers import MessageSerializer
from conversations.api.views import StreamInProgressError
from conversations.models import Conversation, Message
from conversations.services import NothingToRegenerate, StreamInProgress
from quota.exceptions import QuotaExceeded


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


def start_answer(*, user, **request) -> services.StreamStart | services.Retry:
    """`services.stream_start()` with its domain errors as the API's, and the answer's owner spawned.

    Shared by every transport's start (the contract's stream, the AI SDK's chat)."""
    try:
        started = services.stream_start(user=user, **request)
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
        raise QuotaExceededError(error) from None
    if isinstance(started, services.StreamStart):
        generations.launch(started)
    return started


class StreamView(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONErrorsNegotiation


STREAM_RESPONSE = OpenApiResponse(
    OpenApiTypes.STR,
    description="Server-Sent Events: `start`, `chunk`…, then `done` or `error` (docs/api.md).",
)


class ChatStreamView(JSONBodyMixin, StreamView):
    @extend_schema(
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
            409: OpenApiResponse(
                description="An answer of the conversation is streaming; nothing to regenerate."
            ),
            422: OpenApiResponse(description="The Idempotency-Key was used with another body."),
            429: OpenApiResponse(description="Quota exhausted; `Retry-After` gives the seconds until reset."),
            503: OpenApiResponse(description="The conversation's adapter is no longer configured."),
        },
        summary="Send a message and stream the AI's answer",
    )
    def post(self, request):
        serializer = ChatRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = idempotency_key(request)
        started = start_answer(user=request.user, idempotency_key=key, **serializer.validated_data)
        if isinstance(started, services.Retry):
            return sse.response(sse.frames(generations.answer_replay(started.answer_id)))
        return sse.response(_first_reader(started.answer_id))


async def _first_reader(answer_id):
    """The frames of the request that started the answer. Its hang-up stops the answer only under
    `AI_STREAM_ON_DISCONNECT = "interrupt"`; by default the answer goes on for its other readers."""
    ended = False
    try:
        async for frame in sse.frames(await generations.answer_open(answer_id)):
            yield frame
        ended = True
    finally:
        if not ended and settings.AI_STREAM_ON_DISCONNECT == "interrupt":
            generations.answer_interrupt(answer_id)


def _answer_or_404(request, message_id) -> Message:
    try:
        return selectors.answer_of(user=request.user, message_id=message_id)
    except Message.DoesNotExist:
        raise exceptions.NotFound() from None


class AnswerStreamView(StreamView):
    @extend_schema(
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
    )
    def get(self, request, message_id):
        after = last_event_id(request)
        answer = _answer_or_404(request, message_id)
        events = async_to_sync(generations.answer_open)(answer.pk, after=after, anywhere=_may_be_kept(answer))
        if events is None:
            return HttpResponse(status=status.HTTP_204_NO_CONTENT)
        return sse.response(sse.frames(events))


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
            confirmed = async_to_sync(generations.answer_stop)(answer.pk)
            answer.refresh_from_db()
        code = status.HTTP_200_OK if confirmed else status.HTTP_202_ACCEPTED
        return Response(MessageSerializer(answer).data, status=code)
