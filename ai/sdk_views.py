"""The AI SDK's HTTP transport (`DefaultChatTransport`, `useChat`): `POST /api/ai/chat` answers with the
UI message stream; `GET /api/ai/chat/<id>/stream` is its reconnect, `POST …/<id>/stop` stops the chat's
answer and `GET /api/ai/chat/<id>` gives a page its initial messages."""

from contextlib import aclosing

from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response

from ai import generations, ui_stream
from ai.sdk_serializers import UIChatRequestSerializer, UIChatSerializer, conversation_id_for
from ai.views import START_ERRORS, FastView, StartView, StreamView, start_answer, stop
from conversations import selectors
from conversations.models import Conversation
from conversations.services import live_streams

UI_STREAM_RESPONSE = OpenApiResponse(
    OpenApiTypes.STR,
    description="The AI SDK's UI message stream (`x-vercel-ai-ui-message-stream: v1`): `start`, "
    "`text-start`, `text-delta`…, `text-end`, then `finish`, `abort` or `error`; then `data: [DONE]`.",
)


def ui_response(frames) -> StreamingHttpResponse:
    response = StreamingHttpResponse(frames, content_type=ui_stream.CONTENT_TYPE)
    for name, value in ui_stream.HEADERS.items():
        response[name] = value
    return response


async def ui_frames(answer_id, *, first_reader: bool = False):
    """The answer's UI message stream from its start, as SSE frames, ending with `data: [DONE]`."""
    events = await generations.answer_from_start(answer_id, first_reader=first_reader)
    if events is not None:
        async with aclosing(ui_stream.chunk_stream(events, message_id=str(answer_id))) as news:
            async for chunks in news:
                yield ui_stream.sse_frames(chunks)
    yield ui_stream.DONE


@extend_schema_view(
    post=extend_schema(
        request=UIChatRequestSerializer,
        responses={
            (200, "text/event-stream"): UI_STREAM_RESPONSE,
            400: OpenApiResponse(description="Invalid body (`parse_error`, `invalid`)."),
            404: OpenApiResponse(description="The chat's conversation is another user's."),
            **START_ERRORS,
        },
        summary="AI SDK chat: send the chat's new message (or regenerate) and stream the answer",
        operation_id="ai_sdk_chat_send",
    ),
)
class UIChatView(StartView):
    @staticmethod
    def start(user, data, request):
        serializer = UIChatRequestSerializer(data=data, context={"user": user})
        serializer.is_valid(raise_exception=True)
        started = start_answer(
            user=user, auth=request.auth, create_missing=True, **start_options(serializer.validated_data)
        )
        response = ui_response(ui_frames(started.answer_id, first_reader=True))
        response.started = started  # its owner is spawned on the event loop by `admitted`
        return response


def start_options(validated: dict) -> dict:
    """`stream_start()`'s options for a validated AI SDK chat request."""
    options = {"conversation_id": validated["conversation_id"], "regenerate": validated["regenerate"]}
    if validated["message"] is not None:
        options["message"] = validated["message"]
    if "adapter" in validated:
        options["adapter"] = validated["adapter"]
    return options


def _conversation_or_404(request, chat_id) -> Conversation:
    conversation_id = conversation_id_for(user=request.user, chat_id=chat_id)
    try:
        return Conversation.objects.get(pk=conversation_id, user=request.user)
    except Conversation.DoesNotExist:
        raise exceptions.NotFound() from None


class UIChatStreamView(FastView):
    @extend_schema(
        responses={
            (200, "text/event-stream"): UI_STREAM_RESPONSE,
            204: OpenApiResponse(description="The chat has no answer being generated (or is unknown)."),
        },
        summary="AI SDK chat: reconnect to the answer still being generated, from its start",
        operation_id="ai_sdk_chat_reconnect",
    )
    def get(self, request, chat_id):
        return self.served(request, chat_id)

    @staticmethod
    def served(request, chat_id):
        answer = selectors.running_answer(
            user=request.user, conversation_id=conversation_id_for(user=request.user, chat_id=chat_id)
        )
        if answer is None:
            return HttpResponse(status=status.HTTP_204_NO_CONTENT)
        return ui_response(ui_frames(answer.pk))


class UIChatStopView(StreamView):
    @extend_schema(
        request=None,
        responses={
            200: inline_serializer("UIChatStopped", {"stopped": serializers.BooleanField()}),
            404: OpenApiResponse(description="No such chat of the caller's."),
        },
        summary="AI SDK chat: stop the answer being generated",
        operation_id="ai_sdk_chat_stop",
    )
    def post(self, request, chat_id):
        conversation = _conversation_or_404(request, chat_id)
        answer = selectors.running_answer(user=request.user, conversation_id=conversation.pk)
        stopped = answer is not None and stop(answer.pk)
        return Response({"stopped": stopped})


class UIChatMessagesView(StreamView):
    @extend_schema(
        responses={200: UIChatSerializer, 404: OpenApiResponse(description="No such chat of the caller's.")},
        summary="AI SDK chat: its messages as UIMessages, without an answer still being generated",
        operation_id="ai_sdk_chat_messages",
    )
    def get(self, request, chat_id):
        conversation = _conversation_or_404(request, chat_id)
        messages = selectors.message_list(conversation=conversation).exclude(live_streams())
        return Response(UIChatSerializer({"id": chat_id, "messages": messages}).data)
