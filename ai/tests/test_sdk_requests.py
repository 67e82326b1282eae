"""The AI SDK's requests: chat ids, the `POST /api/ai/chat` body and the WebSocket frames (no database)."""

import uuid
from types import SimpleNamespace

import pytest

from ai.sdk_serializers import (
    CHAT_ID_NAMESPACE,
    InvalidFrame,
    UIChatRequestSerializer,
    conversation_id_for,
    request_frame,
)

ALICE, BOB = SimpleNamespace(pk=7), SimpleNamespace(pk=8)


def user_message(*parts, role="user"):
    return {"id": "m1", "role": role, "parts": list(parts)}


def text(value):
    return {"type": "text", "text": value}


def body(**changes):
    return {"id": "chat-1", "messages": [user_message(text("Hello"))], "trigger": "submit-message", **changes}


def validated(data):
    serializer = UIChatRequestSerializer(data=data, context={"user": ALICE})
    assert serializer.is_valid(), serializer.errors
    return serializer.validated_data


def errors(data):
    serializer = UIChatRequestSerializer(data=data, context={"user": ALICE})
    assert not serializer.is_valid()
    return serializer.errors


def test_an_ai_sdk_chat_id_names_a_uuid5_of_its_user_and_id():
    assert conversation_id_for(user=ALICE, chat_id="Xy_9-z") == uuid.uuid5(CHAT_ID_NAMESPACE, "7:Xy_9-z")
    assert uuid.UUID("6f1d6b8e-6a3c-4d21-9a47-1d0c8e1b7a52") == CHAT_ID_NAMESPACE


def test_two_users_with_the_same_chat_id_get_two_conversations():
    assert conversation_id_for(user=ALICE, chat_id="abc") != conversation_id_for(user=BOB, chat_id="abc")


def test_a_uuid_chat_id_is_the_conversation_itself():
    conversation = uuid.uuid4()

    assert conversation_id_for(user=ALICE, chat_id=str(conversation)) == conversation
    assert conversation_id_for(user=BOB, chat_id=str(conversation).upper()) == conversation


def test_submit_message_reads_the_text_parts_of_the_last_message_trimmed():
    data = body(
        messages=[
            user_message(text("an earlier one")),
            {"id": "a1", "role": "assistant", "parts": [text("an answer")]},
            user_message(
                {"type": "file", "url": "data:,x", "mediaType": "text/plain"}, text("  Hi "), text("there ")
            ),
        ],
        messageId=None,
    )

    assert validated(data) == {
        "chat_id": "chat-1",
        "conversation_id": conversation_id_for(user=ALICE, chat_id="chat-1"),
        "message": "Hi \nthere",
        "regenerate": False,
    }


def test_regenerate_message_needs_no_user_message_at_the_end():
    data = body(trigger="regenerate-message", messages=[{"id": "a1", "role": "assistant", "parts": []}])

    assert validated(data)["regenerate"] is True
    assert validated(data)["message"] is None


def test_an_adapter_alias_is_passed_on_and_an_unknown_one_is_refused():
    assert validated(body(adapter="default"))["adapter"] == "default"
    assert "adapter" in errors(body(adapter="nope"))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": ""}, "id"),
        ({"id": "a" * 101}, "id"),
        ({"id": "has space"}, "id"),
        ({"id": "dots.."}, "id"),
        ({"id": "stream"}, "id"),
        ({"id": 12}, "id"),
        ({"messages": "Hello"}, "messages"),
        ({"messages": {"0": user_message(text("Hi"))}}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [user_message(text("Hi"), role="assistant")]}, "messages"),
        ({"messages": ["Hi"]}, "messages"),
        ({"messages": [user_message()]}, "messages"),
        ({"messages": [user_message({"type": "file", "url": "x", "mediaType": "image/png"})]}, "messages"),
        ({"messages": [user_message(text(5))]}, "messages"),
        ({"messages": [{"id": "m", "role": "user", "parts": "Hi"}]}, "messages"),
        ({"messages": [user_message(text("   "))]}, "messages"),
        ({"messages": [user_message(text("x" * 32001))]}, "messages"),
        ({"messages": [user_message(text("a\x00b"))]}, "messages"),
        ({"trigger": "resume-stream"}, "trigger"),
        ({"trigger": None}, "trigger"),
        ({"messageId": 5}, "messageId"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_a_bad_body_names_its_field(changes, field):
    assert field in errors(body(**changes))


@pytest.mark.parametrize("missing", ["id", "messages", "trigger"])
def test_required_fields(missing):
    data = body()
    del data[missing]

    assert missing in errors(data)


def test_the_longest_message_allowed_passes(settings):
    settings.AI_MAX_MESSAGE_CHARS = 10

    assert validated(body(messages=[user_message(text("x" * 10))]))["message"] == "x" * 10
    assert "messages" in errors(body(messages=[user_message(text("x" * 11))]))


SEND = {
    "type": "send",
    "requestId": "r1",
    "id": "chat-1",
    "trigger": "submit-message",
    "messageId": "m1",
    "messages": [user_message(text("Hi"))],
    "headers": {"authorization": "Token k"},
    "body": {},
    "metadata": None,
}
RESUME = {"type": "resume", "requestId": "r2", "id": "chat-1", "headers": {}, "body": {}, "metadata": None}


def frame(base, **changes):
    result = {**base, **changes}
    return {key: value for key, value in result.items() if value is not ...}


# Frames and whether `safeValidateWebSocketChatTransportRequest` accepts them (the Node test checks
# this table against the real function: test_ai_sdk_clients.py).
FRAMES = [
    (SEND, True),
    (frame(SEND, messageId=...), True),
    (frame(SEND, body={"adapter": "default"}), True),
    (RESUME, True),
    (frame(RESUME, lastSequence=0), True),
    (frame(RESUME, lastSequence=41), True),
    ({"type": "abort", "requestId": "r1"}, True),
    ([], False),
    ("send", False),
    ({"requestId": "r1"}, False),
    ({"type": 5, "requestId": "r1"}, False),
    ({"type": "abort"}, False),
    ({"type": "abort", "requestId": 1}, False),
    (frame(SEND, requestId=...), False),
    (frame(SEND, requestId=7), False),
    (frame(SEND, id=...), False),
    (frame(SEND, id=3), False),
    (frame(SEND, headers=...), False),
    (frame(SEND, headers={"authorization": 5}), False),
    (frame(SEND, headers=[]), False),
    (frame(SEND, body=...), False),
    (frame(SEND, body="x"), False),
    (frame(SEND, body=[]), False),
    (frame(SEND, trigger="resume-stream"), False),
    (frame(SEND, trigger=...), False),
    (frame(SEND, messageId=5), False),
    (frame(SEND, messageId=None), False),
    (frame(SEND, type="sned"), False),
    (frame(RESUME, lastSequence=-1), False),
    (frame(RESUME, lastSequence=1.5), False),
    (frame(RESUME, lastSequence="3"), False),
    (frame(RESUME, lastSequence=None), False),
    (frame(RESUME, lastSequence=True), False),
    (frame(RESUME, headers=...), False),
]


@pytest.mark.parametrize(("value", "valid"), FRAMES, ids=lambda value: str(value)[:50])
def test_request_frames_are_checked_as_the_ai_sdk_checks_them(value, valid):
    if valid:
        assert request_frame(value) is value
    else:
        with pytest.raises(InvalidFrame):
            request_frame(value)


def test_an_invalid_frame_keeps_its_request_id_when_it_has_one():
    with pytest.raises(InvalidFrame) as refused:
        request_frame(frame(SEND, trigger="nope"))
    assert refused.value.request_id == "r1"

    with pytest.raises(InvalidFrame) as refused:
        request_frame({"type": "send", "requestId": 5})
    assert refused.value.request_id is None
