"""`/ws/ai/chat`: the consumer alone (channels' WebsocketCommunicator), then end to end through a real
daphne with a real WebSocket client (`websockets`): checks, malformed frames, resume by sequence.

(The AI SDK's own WebSocketChatTransport against it: test_ai_sdk_clients.py.)
"""

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from ai.consumers import MAX_FRAME_CHARS, ChatConsumer
from ai.tests.sse_client import wait_for
from conversations.models import Conversation, Message
from quota.models import Quota

FAST = "[mock:chunks=4][mock:delay_ms=0]"
SLOW = "[mock:chunks=30][mock:delay_ms=100]"


def send_frame(request_id: str, text: str, *, chat_id: str = "ws-chat", token=None, **changes) -> dict:
    return {
        "type": "send",
        "requestId": request_id,
        "id": chat_id,
        "trigger": "submit-message",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}],
        "headers": {"authorization": f"Token {token.key}"} if token else {},
        "body": {},
        "metadata": None,
        **changes,
    }


def resume_frame(request_id: str, *, chat_id: str = "ws-chat", token=None, **changes) -> dict:
    headers = {"authorization": f"Token {token.key}"} if token else {}
    return {
        "type": "resume",
        "requestId": request_id,
        "id": chat_id,
        "headers": headers,
        "body": {},
        **changes,
    }


# --- the consumer alone -------------------------------------------------------------------------
async def _exchange(frames: list, *, answers: int) -> tuple[list, bool]:
    """Send `frames` (str/bytes as they are, anything else as JSON) to a fresh consumer; return the
    first `answers` envelopes and whether the socket is still open afterwards."""
    communicator = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/ai/chat")
    connected, _ = await communicator.connect()
    assert connected
    for frame in frames:
        if frame == "":  # an empty text frame (the communicator's send_to cannot send one)
            await communicator.send_input({"type": "websocket.receive", "text": ""})
        elif isinstance(frame, bytes):
            await communicator.send_to(bytes_data=frame)
        elif isinstance(frame, str):
            await communicator.send_to(text_data=frame)
        else:
            await communicator.send_json_to(frame)
    received = [await communicator.receive_json_from(timeout=5) for _ in range(answers)]
    # Still serving: a resume without credentials is refused with its requestId.
    await communicator.send_json_to(resume_frame("probe"))
    probe = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()
    return received, probe == {
        "type": "error",
        "requestId": "probe",
        "errorText": "Authentication credentials were not provided.",
        "code": "not_authenticated",
    }


def exchange(frames: list, *, answers: int = 1):
    return asyncio.run(_exchange(frames, answers=answers))


@pytest.mark.parametrize(
    "frame",
    ["{not json", "", "[1, 2]", '"send"', "null", "42", b"\x00\x01", {"type": "send"}, {"requestId": "x"}],
    ids=["not-json", "empty", "array", "string", "null", "number", "binary", "no-request-id", "no-type"],
)
def test_a_frame_that_is_not_a_request_gets_an_error_without_request_id_and_the_socket_stays(frame):
    [error], open_after = exchange([frame])

    assert error["type"] == "error"
    assert "requestId" not in error
    assert error["errorText"]
    assert open_after


@pytest.mark.parametrize(
    ("frame", "text"),
    [
        ({"type": "sned", "requestId": "r1", "id": "c", "headers": {}, "body": {}}, "send request"),
        (send_frame("r1", "hi", trigger="resume-stream"), "send request"),
        (send_frame("r1", "hi", headers={"authorization": 5}), "request frame"),
        (resume_frame("r1", lastSequence=-1), "resume sequence"),
    ],
    ids=["unknown-type", "bad-trigger", "bad-headers", "bad-sequence"],
)
def test_an_invalid_request_gets_an_error_with_its_request_id(frame, text):
    [error], open_after = exchange([frame])

    assert error == {"type": "error", "requestId": "r1", "errorText": error["errorText"], "code": "invalid"}
    assert text in error["errorText"]
    assert open_after


def test_a_request_without_credentials_is_refused_with_the_json_errors_detail():
    [error], open_after = exchange([send_frame("r1", "hi")])

    assert error == {
        "type": "error",
        "requestId": "r1",
        "errorText": "Authentication credentials were not provided.",
        "code": "not_authenticated",
    }
    assert open_after


def test_a_frame_just_under_the_limit_is_read_and_refused_as_invalid():
    frame = json.dumps(send_frame("big", "x" * (MAX_FRAME_CHARS - 1000)))
    assert len(frame) <= MAX_FRAME_CHARS

    [error], open_after = exchange([frame])

    assert error["requestId"] == "big"
    assert error["code"] == "not_authenticated"  # authentication comes first, as on HTTP
    assert open_after


def test_a_frame_over_the_limit_closes_the_socket_with_1009():
    async def oversized():
        communicator = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/ai/chat")
        await communicator.connect()
        await communicator.send_to(text_data=json.dumps(send_frame("big", "x" * MAX_FRAME_CHARS)))
        closed = await communicator.receive_output(timeout=5)
        await communicator.wait()
        return closed

    assert asyncio.run(oversized()) == {"type": "websocket.close", "code": 1009, "reason": "Frame too big."}


def test_an_abort_of_an_unknown_request_is_ignored():
    received, open_after = exchange([{"type": "abort", "requestId": "nothing"}], answers=0)

    assert received == []
    assert open_after


# --- end to end: daphne, the `websockets` client --------------------------------------------------
pytestmark_e2e = pytest.mark.django_db(transaction=True)


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/ws/ai/chat"


def open_socket(server, *, origin: str | None = "self", **options):
    return connect(
        ws_url(server),
        origin=server.url if origin == "self" else origin,
        proxy=None,
        open_timeout=10,
        **options,
    )


class Mailbox:
    """The envelopes a socket receives, sorted by `requestId` (several requests share one socket)."""

    def __init__(self, socket):
        self.socket = socket
        self.waiting: dict[str | None, list[dict]] = {}

    def next(self, request_id: str) -> dict:
        while not self.waiting.get(request_id):
            envelope = json.loads(self.socket.recv(timeout=30))
            self.waiting.setdefault(envelope.get("requestId"), []).append(envelope)
        return self.waiting[request_id].pop(0)

    def read(self, request_id: str) -> list[dict]:
        """The request's envelopes to its `end`, `error` or `no-active`."""
        envelopes = [self.next(request_id)]
        while envelopes[-1]["type"] not in ("end", "error", "no-active"):
            envelopes.append(self.next(request_id))
        return envelopes


def read_request(socket, request_id: str) -> list[dict]:
    return Mailbox(socket).read(request_id)


def chunks_of(envelopes: list[dict]) -> list[dict]:
    return [e["chunk"] for e in envelopes if e["type"] == "chunk"]


def text_of(envelopes: list[dict]) -> str:
    return "".join(c["delta"] for c in chunks_of(envelopes) if c["type"] == "text-delta")


@pytestmark_e2e
def test_a_send_streams_numbered_chunks_of_the_answer_the_database_holds(live_asgi, token, user):
    with open_socket(live_asgi) as socket:
        socket.send(json.dumps(send_frame("r1", f"Hi {FAST}", token=token)))
        envelopes = read_request(socket, "r1")

    [answer] = Message.objects.filter(role="assistant")
    assert envelopes[0] == {"type": "start", "requestId": "r1"}
    assert envelopes[-1] == {"type": "end", "requestId": "r1"}
    assert [e["sequence"] for e in envelopes[1:-1]] == list(range(len(envelopes) - 2))
    assert [c["type"] for c in chunks_of(envelopes)] == [
        "start",
        "text-start",
        *["text-delta"] * 4,
        "text-end",
        "finish",
    ]
    assert chunks_of(envelopes)[0]["messageId"] == str(answer.pk)
    assert text_of(envelopes) == answer.content


@pytestmark_e2e
def test_refusals_are_error_envelopes_with_the_json_errors_detail_and_the_socket_stays(
    live_asgi, token, user, other_user
):
    theirs = Conversation.objects.create(user=other_user, adapter="default")
    with open_socket(live_asgi) as socket:
        mail = Mailbox(socket)
        socket.send(json.dumps(send_frame("bad-token", "hi", headers={"authorization": "Token nope"})))
        socket.send(json.dumps(send_frame("theirs", "hi", chat_id=str(theirs.pk), token=token)))
        socket.send(json.dumps(send_frame("blank", "   ", token=token)))
        socket.send(json.dumps(send_frame("running", SLOW, token=token)))
        assert mail.next("running")["type"] == "start"
        socket.send(json.dumps(send_frame("busy", "again", token=token)))
        refused = {rid: mail.read(rid)[-1] for rid in ("bad-token", "theirs", "blank", "busy")}
        socket.send(json.dumps({"type": "abort", "requestId": "running"}))
        wait_for(lambda: Message.objects.filter(status="stopped").exists())
        Quota.objects.filter(user=user).update(request_limit=1)  # the stopped answer was charged
        socket.send(json.dumps(send_frame("quota", "hi", chat_id="other", token=token)))
        refused["quota"] = mail.read("quota")[-1]

    assert {rid: (e["type"], e["code"]) for rid, e in refused.items()} == {
        "bad-token": ("error", "authentication_failed"),
        "theirs": ("error", "not_found"),
        "blank": ("error", "invalid"),
        "busy": ("error", "stream_in_progress"),
        "quota": ("error", "quota_exceeded"),
    }
    assert refused["bad-token"]["errorText"] == "Invalid token."
    assert refused["theirs"]["errorText"] == "Not found."
    assert "messages" in refused["blank"]["errorText"]
    assert not theirs.messages.exists()
    assert Message.objects.count() == 2


@pytestmark_e2e
def test_a_resume_replays_from_the_start_or_after_last_sequence_numbered_as_the_original(
    live_asgi, token, user
):
    with open_socket(live_asgi) as first:
        first.send(json.dumps(send_frame("r1", "[mock:chunks=20][mock:delay_ms=100]", token=token)))
        while json.loads(first.recv(timeout=30)).get("sequence") != 3:
            pass
    # The first socket closed (a reload): the answer goes on; two readers come back.
    with open_socket(live_asgi) as again:
        mail = Mailbox(again)
        again.send(json.dumps(resume_frame("all", token=token)))
        again.send(json.dumps(resume_frame("after-4", token=token, lastSequence=4)))
        everything = mail.read("all")
        after_four = mail.read("after-4")
        again.send(json.dumps(resume_frame("done", token=token)))
        nothing = mail.read("done")

    [answer] = Message.objects.filter(role="assistant")
    assert answer.status == "complete"
    assert text_of(everything) == answer.content
    numbered = {e["sequence"]: e["chunk"] for e in everything if e["type"] == "chunk"}
    assert [e["sequence"] for e in after_four if e["type"] == "chunk"] == sorted(numbered)[5:]
    assert all(numbered[e["sequence"]] == e["chunk"] for e in after_four if e["type"] == "chunk")
    assert nothing == [{"type": "no-active", "requestId": "done"}]


def over_the_limit(socket) -> None:
    """A frame over daphne's 1 MiB (it closes the socket), then a read of what follows."""
    socket.send("x" * (1024 * 1024 + 1))
    socket.recv(timeout=10)


@pytestmark_e2e
def test_malformed_frames_never_disturb_another_socket(live_asgi, token, user):
    with open_socket(live_asgi) as healthy, open_socket(live_asgi) as hostile:
        healthy.send(json.dumps(send_frame("r1", "[mock:chunks=15][mock:delay_ms=50]", token=token)))
        hostile.send("{not json")
        hostile.send(b"\xff\x00binary")
        hostile.send(json.dumps({"type": "explode", "requestId": "x"}))
        errors = [json.loads(hostile.recv(timeout=10)) for _ in range(3)]
        with pytest.raises(ConnectionClosed):  # the send itself may see it closed, mid-way
            over_the_limit(hostile)
        envelopes = read_request(healthy, "r1")

    assert [e["type"] for e in errors] == ["error"] * 3
    assert errors[2]["requestId"] == "x"
    [answer] = Message.objects.filter(role="assistant")
    assert envelopes[-1]["type"] == "end"
    assert text_of(envelopes) == answer.content


@pytestmark_e2e
def test_the_session_cookie_authenticates_a_socket_whose_origin_is_an_allowed_host(live_asgi, session, user):
    cookie = "; ".join(f"{name}={value}" for name, value in session[0].items())
    with open_socket(live_asgi, additional_headers={"Cookie": cookie}) as socket:
        socket.send(json.dumps(send_frame("r1", FAST)))
        envelopes = read_request(socket, "r1")

    assert envelopes[-1]["type"] == "end"
    assert Conversation.objects.get().user == user


@pytestmark_e2e
def test_a_socket_from_another_sites_page_is_refused_at_the_handshake(live_asgi, session):
    cookie = "; ".join(f"{name}={value}" for name, value in session[0].items())

    with pytest.raises(InvalidStatus) as refused:
        open_socket(live_asgi, origin="http://evil.example", additional_headers={"Cookie": cookie})

    assert refused.value.response.status_code == 403


@pytestmark_e2e
def test_a_socket_without_an_origin_is_no_browser_its_cookie_counts_for_nothing(live_asgi, session, token):
    cookie = "; ".join(f"{name}={value}" for name, value in session[0].items())
    with open_socket(live_asgi, origin=None, additional_headers={"Cookie": cookie}) as socket:
        socket.send(json.dumps(send_frame("r1", FAST)))
        refused = read_request(socket, "r1")
        socket.send(json.dumps(send_frame("r2", FAST, token=token)))
        served = read_request(socket, "r2")

    assert [e["type"] for e in refused] == ["error"]
    assert served[-1]["type"] == "end"
    assert Message.objects.filter(role="assistant").count() == 1


@pytestmark_e2e
def test_another_websocket_path_is_refused(live_asgi):
    with pytest.raises(InvalidStatus) as refused:
        connect(live_asgi.url.replace("http", "ws") + "/ws/other", origin=live_asgi.url, proxy=None)

    assert refused.value.response.status_code == 403


@pytestmark_e2e
@pytest.mark.parametrize(
    ("on_disconnect", "status"), [("continue", "complete"), ("interrupt", "interrupted")]
)
def test_closing_the_socket_is_a_hang_up(asgi_server_factory, token, user, on_disconnect, status):
    server = asgi_server_factory(AI_STREAM_ON_DISCONNECT=on_disconnect)
    with open_socket(server) as socket:
        socket.send(json.dumps(send_frame("r1", SLOW, token=token)))
        while json.loads(socket.recv(timeout=30)).get("sequence") != 2:
            pass

    answer = wait_for(
        lambda: Message.objects.filter(role="assistant").exclude(status="streaming").first(), timeout=30
    )
    assert answer.status == status


@pytestmark_e2e
def test_an_abort_of_a_resume_only_leaves_and_a_request_id_in_use_is_refused(live_asgi, token, user):
    # The AI SDK aborts a resume it replaces with another one (a second `resumeStream()`): that must
    # not stop the answer. Only the abort of the `send` that started it is a stop.
    with open_socket(live_asgi) as socket:
        mail = Mailbox(socket)
        socket.send(json.dumps(send_frame("r1", "[mock:chunks=10][mock:delay_ms=100]", token=token)))
        assert mail.next("r1")["type"] == "start"
        socket.send(json.dumps(resume_frame("r2", token=token)))
        assert mail.next("r2")["type"] == "start"
        socket.send(json.dumps({"type": "abort", "requestId": "r2"}))
        socket.send(json.dumps(resume_frame("r1", token=token)))
        *before, in_use = mail.read("r1")  # r1's chunks so far, then the refusal of the second r1
        envelopes = before + mail.read("r1")

    assert in_use == {
        "type": "error",
        "requestId": "r1",
        "errorText": "This requestId is already in use on this socket.",
        "code": "invalid",
    }
    assert envelopes[-1] == {"type": "end", "requestId": "r1"}
    [answer] = Message.objects.filter(role="assistant")
    assert answer.status == "complete"
    assert text_of(envelopes) == answer.content
