"""`/ws/ai/chat`: the AI SDK's `WebSocketChatTransport` over one socket (API.md, "AI SDK clients").

Each `send` or `resume` frame is one request, served by a task of its own (several share a socket):
it authenticates, starts or finds the chat's answer as the HTTP views do, and sends the answer's UI
message chunks numbered by `sequence`. `abort` of a `send` stops its answer; closing the socket is a
hang-up of its requests' readers, as on HTTP.
"""

import asyncio
import json
import logging
from contextlib import aclosing

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import HttpRequest
from rest_framework import exceptions

from ai import generations, ui_stream
from ai.sdk_serializers import InvalidFrame, UIChatRequestSerializer, conversation_id_for, request_frame
from ai.sdk_views import start_options
from ai.views import start_answer
from chatsvc.authentication import TokenAuthentication
from conversations import selectors

logger = logging.getLogger("ai.stream")

# Daphne refuses larger messages itself (closing with 1009); the same limit under any other server.
MAX_FRAME_CHARS = 1024 * 1024
CLOSE_TOO_BIG = 1009


def _in_a_thread(work):
    """`work` (one self-contained unit of database work) off the event loop, in any thread of the pool:
    channels' default (thread-sensitive) would run every socket's through one thread."""
    return database_sync_to_async(work, thread_sensitive=False)


def _error_text(error: exceptions.APIException) -> str:
    """The JSON error's `detail` (with the per-field messages of a validation error)."""
    if not isinstance(error, exceptions.ValidationError):
        return str(error.detail)
    fields = error.detail if isinstance(error.detail, dict) else {"non_field_errors": error.detail}
    messages = "; ".join(
        f"{name}: {' '.join(str(item) for item in items) if isinstance(items, list) else items}"
        for name, items in fields.items()
    )
    return f"Invalid input. {messages}"


def _code(error: exceptions.APIException) -> str:
    return getattr(error.detail, "code", None) or error.default_code


def _authenticate_token(authorization: str):
    """The user of an `Authorization` header, as DRF's TokenAuthentication reads it (None: no token)."""
    request = HttpRequest()
    request.META["HTTP_AUTHORIZATION"] = authorization
    found = TokenAuthentication().authenticate(request)
    return found[0] if found else None


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """One socket of `WebSocketChatTransport`: its requests, each a task, by `requestId`."""

    async def connect(self):
        self.requests: dict[str, tuple[asyncio.Task, str]] = {}  # requestId → (its task, send | resume)
        self.answers: dict[str, str] = {}  # requestId of a send → the answer it started
        self.aborted: set[str] = set()  # sends aborted before their answer started
        self.stops: set[asyncio.Task] = set()
        await self.accept()

    async def disconnect(self, code):
        tasks = [task for task, _ in self.requests.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if text_data is None:
            await self._refuse(None, "Send each request as a JSON text frame.")
        elif len(text_data) > MAX_FRAME_CHARS:
            await self.close(CLOSE_TOO_BIG, "Frame too big.")
        else:
            try:
                content = json.loads(text_data)
            except ValueError:
                await self._refuse(None, "A request frame is a JSON object.")
            else:
                await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        try:
            frame = request_frame(content)
        except InvalidFrame as error:
            await self._refuse(error.request_id, str(error))
            return
        request_id = frame["requestId"]
        if frame["type"] == "abort":
            self._abort(request_id)
        elif request_id in self.requests:
            await self._refuse(request_id, "This requestId is already in use on this socket.")
        else:
            serve = self._send if frame["type"] == "send" else self._resume
            task = asyncio.create_task(self._serve(serve, frame))
            self.requests[request_id] = (task, frame["type"])

    async def _refuse(self, request_id: str | None, text: str, code: str = "invalid") -> None:
        envelope = {"type": "error", "errorText": text, "code": code}
        if request_id is not None:
            envelope["requestId"] = request_id
        await self.send_json(envelope)

    def _abort(self, request_id: str) -> None:
        """`abort` of a `send` stops its answer (its reader then ends with the answer); of a `resume`,
        the reader leaves (the AI SDK aborts a resume it replaces with another, so it stops nothing)."""
        task, kind = self.requests.get(request_id, (None, None))
        if kind == "send" and request_id in self.answers:
            stop = asyncio.create_task(generations.answer_stop(self.answers[request_id]))
            self.stops.add(stop)
            stop.add_done_callback(self.stops.discard)
        elif kind == "send":
            self.aborted.add(request_id)
        elif task is not None:
            task.cancel()

    async def _serve(self, serve, frame) -> None:
        request_id = frame["requestId"]
        try:
            await serve(frame)
        except exceptions.APIException as error:
            await self._refuse(request_id, _error_text(error), _code(error))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("websocket request failed")
            await self._refuse(request_id, "Something went wrong on our side.", "internal_error")
        finally:
            self.requests.pop(request_id, None)
            self.answers.pop(request_id, None)
            self.aborted.discard(request_id)

    async def _user(self, headers: dict):
        """The frame's user: its `authorization: Token …` header, else the socket's session."""
        authorization = next(
            (value for name, value in headers.items() if name.lower() == "authorization"), None
        )
        if authorization:
            user = await _in_a_thread(_authenticate_token)(authorization)
            if user is not None:
                return user
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            raise exceptions.NotAuthenticated()
        return user

    async def _send(self, frame) -> None:
        user = await self._user(frame["headers"])
        body = {
            **frame["body"],
            "id": frame["id"],
            "messages": frame.get("messages"),
            "trigger": frame["trigger"],
        }
        serializer = UIChatRequestSerializer(data=body, context={"user": user})
        serializer.is_valid(raise_exception=True)
        options = start_options(serializer.validated_data)
        started = await generations.owned_once_started(
            _in_a_thread(start_answer)(user=user, auth=None, create_missing=True, **options)
        )
        answer_id = str(started.answer_id)
        if frame["requestId"] in self.aborted:
            await generations.answer_stop(answer_id)
            return
        self.answers[frame["requestId"]] = answer_id
        await self._stream(frame, answer_id, first_reader=True)

    async def _resume(self, frame) -> None:
        user = await self._user(frame["headers"])
        conversation_id = conversation_id_for(user=user, chat_id=frame["id"])
        answer = await _in_a_thread(selectors.running_answer)(user=user, conversation_id=conversation_id)
        if answer is None or not await self._stream(frame, str(answer.pk)):
            await self.send_json({"type": "no-active", "requestId": frame["requestId"]})

    async def _stream(self, frame, answer_id: str, *, first_reader: bool = False) -> bool:
        """Send the answer's chunks after the frame's `lastSequence`, numbered from 0 as the first reader
        was sent them, then `end`; False when no process keeps its events."""
        request_id, after = frame["requestId"], frame.get("lastSequence", -1)
        events = await generations.answer_from_start(answer_id, first_reader=first_reader)
        if events is None:
            return False
        await self.send_json({"type": "start", "requestId": request_id})
        sequence = 0
        async with aclosing(ui_stream.chunk_stream(events, message_id=answer_id)) as news:
            async for chunks in news:
                for chunk in chunks or ():  # a quiet while: nothing to send (the socket has pings)
                    if sequence > after:
                        await self.send_json(
                            {"type": "chunk", "requestId": request_id, "sequence": sequence, "chunk": chunk}
                        )
                    sequence += 1
        await self.send_json({"type": "end", "requestId": request_id})
        return True
