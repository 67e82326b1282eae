"""`POST /api/ai/chat/stream`: checks the request, starts the stream, answers with its SSE frames."""

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from ai import services
from ai.serializers import ChatRequestSerializer
from chatsvc.api import JSONBodyMixin
from conversations.models import Conversation
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


class JSONErrorsNegotiation(DefaultContentNegotiation):
    """Errors are JSON whatever the client accepts (`Accept: text/event-stream` included)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ChatStreamView(JSONBodyMixin, APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONErrorsNegotiation

    @extend_schema(
        request=ChatRequestSerializer,
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                OpenApiTypes.STR,
                description="Server-Sent Events: `start`, `chunk`…, then `done` or `error` (docs/api.md).",
            ),
            400: OpenApiResponse(description="Invalid body (`parse_error`, `invalid`)."),
            404: OpenApiResponse(description="The conversation is missing or not the caller's."),
            429: OpenApiResponse(description="Quota exhausted; `Retry-After` gives the seconds until reset."),
            503: OpenApiResponse(description="The conversation's adapter is no longer configured."),
        },
        summary="Send a message and stream the AI's answer",
    )
    def post(self, request):
        serializer = ChatRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            start = services.stream_start(user=request.user, **serializer.validated_data)
        except Conversation.DoesNotExist:
            raise exceptions.NotFound() from None
        except services.AdapterNotConfigured as error:
            raise AdapterUnavailableError(str(error)) from None
        except QuotaExceeded as error:
            raise QuotaExceededError(error) from None
        response = StreamingHttpResponse(
            services.generate_stream(start), content_type="text/event-stream; charset=utf-8"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
