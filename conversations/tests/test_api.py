"""The conversations API: every endpoint, its pagination and ordering, and ownership."""

from datetime import timedelta

import pytest
from django.utils import timezone

from conversations.models import Conversation, Message
from conversations.tests.factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db

LIST_URL = "/api/conversations/"


def detail_url(conversation):
    return f"/api/conversations/{conversation.pk}/"


def messages_url(conversation):
    return f"/api/conversations/{conversation.pk}/messages/"


def make_conversations(user, count):
    """`count` conversations of `user`, the first one the most recently updated."""
    now = timezone.now()
    conversations = ConversationFactory.create_batch(count, user=user)
    for age, conversation in enumerate(conversations):
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=now - timedelta(minutes=age))
    return [str(conversation.pk) for conversation in conversations]


# --- list --------------------------------------------------------------------------------------


def test_list_shows_only_the_callers_conversations_most_recently_updated_first(api, user, other_user):
    ids = make_conversations(user, 3)
    ConversationFactory(user=other_user)
    Conversation.objects.filter(pk=ids[2]).update(updated_at=timezone.now() + timedelta(minutes=1))

    response = api.get(LIST_URL)

    assert response.status_code == 200
    assert [item["id"] for item in response.json()["results"]] == [ids[2], ids[0], ids[1]]
    assert response.json()["count"] == 3


def test_list_item_has_the_conversation_fields_with_utc_timestamps(api, user):
    conversation = ConversationFactory(user=user, title="Trip", adapter="default")

    item = api.get(LIST_URL).json()["results"][0]

    assert set(item) == {"id", "title", "adapter", "created_at", "updated_at"}
    assert item["id"] == str(conversation.pk)
    assert (item["title"], item["adapter"]) == ("Trip", "default")
    assert item["created_at"].endswith("Z")
    assert item["updated_at"].endswith("Z")


def test_list_is_paginated_fifty_a_page(api, user):
    ids = make_conversations(user, 51)

    first = api.get(LIST_URL).json()
    second = api.get(LIST_URL, {"page": 2}).json()

    assert set(first) == {"count", "next", "previous", "results"}
    assert first["count"] == 51
    assert [item["id"] for item in first["results"]] == ids[:50]
    assert first["previous"] is None
    assert first["next"].endswith("/api/conversations/?page=2")
    assert [item["id"] for item in second["results"]] == ids[50:]
    assert second["next"] is None
    assert second["previous"] is not None


@pytest.mark.parametrize(
    ("page_size", "expected"),
    [("3", 3), ("200", 200), ("500", 200), ("0", 50), ("-1", 50), ("many", 50)],
)
def test_list_page_size_is_chosen_by_the_client_up_to_two_hundred(api, user, page_size, expected):
    make_conversations(user, 201)

    response = api.get(LIST_URL, {"page_size": page_size})

    assert len(response.json()["results"]) == expected


def test_list_page_past_the_end_is_a_json_404(api, user):
    make_conversations(user, 2)

    response = api.get(LIST_URL, {"page": 5})

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


# --- create ------------------------------------------------------------------------------------


def test_create_with_title_and_adapter_answers_201_and_stores_them(api, user):
    response = api.post(LIST_URL, {"title": "Plans", "adapter": "openai"}, format="json")

    assert response.status_code == 201
    body = response.json()
    conversation = Conversation.objects.get(pk=body["id"])
    assert (conversation.user, conversation.title, conversation.adapter) == (user, "Plans", "openai")
    assert (body["title"], body["adapter"]) == ("Plans", "openai")


def test_create_without_fields_uses_an_empty_title_and_the_default_adapter(api, settings):
    settings.AI_ADAPTERS = {**settings.AI_ADAPTERS, "house": {"BACKEND": "ai.adapters.mock.MockAdapter"}}
    settings.AI_DEFAULT_ADAPTER = "house"

    response = api.post(LIST_URL, {}, format="json")

    assert response.status_code == 201
    assert response.json()["title"] == ""
    assert response.json()["adapter"] == "house"
    assert Conversation.objects.get(pk=response.json()["id"]).adapter == "house"


def test_create_with_an_unknown_adapter_is_a_400_naming_adapter(api):
    response = api.post(LIST_URL, {"adapter": "nope"}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "adapter" in response.json()["errors"]
    assert not Conversation.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x" * 201}, "title"),
        ({"title": 5}, "title"),
        ({"title": None}, "title"),
        ({"title": ["a"]}, "title"),
        ({"adapter": 7}, "adapter"),
        ({"adapter": ""}, "adapter"),
    ],
    ids=["title-too-long", "title-number", "title-null", "title-list", "adapter-number", "adapter-empty"],
)
def test_create_with_a_bad_field_is_a_400_naming_it(api, body, field):
    response = api.post(LIST_URL, body, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert field in response.json()["errors"]
    assert not Conversation.objects.exists()


def test_create_accepts_a_title_of_exactly_two_hundred_characters(api):
    response = api.post(LIST_URL, {"title": "x" * 200}, format="json")

    assert response.status_code == 201


# --- retrieve, update, delete -------------------------------------------------------------------


def test_retrieve_answers_the_conversation(api, user):
    conversation = ConversationFactory(user=user, title="Hello")

    response = api.get(detail_url(conversation))

    assert response.status_code == 200
    assert response.json()["id"] == str(conversation.pk)
    assert response.json()["title"] == "Hello"


def test_patch_changes_title_and_adapter_and_moves_updated_at(api, user):
    conversation = ConversationFactory(user=user, title="Old", adapter="default")
    long_ago = timezone.now() - timedelta(days=1)
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=long_ago)

    response = api.patch(detail_url(conversation), {"title": "New", "adapter": "openai"}, format="json")

    assert response.status_code == 200
    conversation.refresh_from_db()
    assert (conversation.title, conversation.adapter) == ("New", "openai")
    assert conversation.updated_at > long_ago
    assert response.json()["title"] == "New"
    assert response.json()["updated_at"] == conversation.updated_at.isoformat().replace("+00:00", "Z")


def test_patch_with_an_unknown_adapter_is_a_400_and_changes_nothing(api, user):
    conversation = ConversationFactory(user=user, adapter="default")

    response = api.patch(detail_url(conversation), {"adapter": "nope"}, format="json")

    assert response.status_code == 400
    assert "adapter" in response.json()["errors"]
    conversation.refresh_from_db()
    assert conversation.adapter == "default"


def test_put_is_not_allowed(api, user):
    conversation = ConversationFactory(user=user, title="Keep")

    response = api.put(detail_url(conversation), {"title": "x", "adapter": "default"}, format="json")

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    conversation.refresh_from_db()
    assert conversation.title == "Keep"


def test_delete_answers_204_and_removes_the_conversation_and_its_messages(api, user):
    conversation = ConversationFactory(user=user)
    MessageFactory.create_batch(3, conversation=conversation)
    kept = MessageFactory(conversation__user=user)

    response = api.delete(detail_url(conversation))

    assert response.status_code == 204
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert list(Message.objects.all()) == [kept]


def test_delete_while_an_answer_streams_is_a_409_and_keeps_everything(api, user):
    conversation = ConversationFactory(user=user)
    MessageFactory(conversation=conversation)
    MessageFactory(conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING)

    response = api.delete(detail_url(conversation))

    assert response.status_code == 409
    assert response.json()["code"] == "stream_in_progress"
    assert conversation.messages.count() == 2


@pytest.mark.parametrize("status", [Message.Status.INTERRUPTED, Message.Status.FAILED])
def test_delete_after_an_answer_ended_badly_is_allowed(api, user, status):
    conversation = ConversationFactory(user=user)
    MessageFactory(conversation=conversation, role=Message.Role.ASSISTANT, status=status)

    assert api.delete(detail_url(conversation)).status_code == 204
    assert not Message.objects.exists()


# --- messages ----------------------------------------------------------------------------------


def test_messages_are_listed_oldest_first_with_each_question_before_its_answer(api, user):
    conversation = ConversationFactory(user=user)
    now = timezone.now()
    # Created answer first, with the same created_at: only `position` can put the question first.
    later_answer = MessageFactory(
        conversation=conversation, role=Message.Role.ASSISTANT, created_at=now, position=1
    )
    later_question = MessageFactory(conversation=conversation, created_at=now, position=0)
    earlier = MessageFactory(conversation=conversation, created_at=now - timedelta(seconds=5))

    response = api.get(messages_url(conversation))

    assert response.status_code == 200
    assert [item["id"] for item in response.json()["results"]] == [
        str(earlier.pk),
        str(later_question.pk),
        str(later_answer.pk),
    ]


def test_messages_show_usage_and_error_or_null(api, user):
    conversation = ConversationFactory(user=user)
    now = timezone.now()
    question = MessageFactory(conversation=conversation, content="Hi", created_at=now)
    answer = MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="Hello",
        created_at=now,
        position=1,
        prompt_tokens=3,
        completion_tokens=2,
        total_tokens=5,
    )
    failed = MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="Par",
        status=Message.Status.FAILED,
        created_at=now + timedelta(seconds=1),
        error_code="adapter_error",
        error_message="The AI service failed.",
    )

    results = api.get(messages_url(conversation)).json()["results"]

    assert results[0] == {
        "id": str(question.pk),
        "role": "user",
        "content": "Hi",
        "status": "complete",
        "created_at": question.created_at.isoformat().replace("+00:00", "Z"),
        "usage": None,
        "error": None,
    }
    assert results[1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert results[1]["error"] is None
    assert results[2]["id"] == str(failed.pk)
    assert results[2]["status"] == "failed"
    assert results[2]["error"] == {"code": "adapter_error", "message": "The AI service failed."}
    assert results[2]["usage"] is None
    assert answer.usage == results[1]["usage"]


def test_messages_are_paginated(api, user):
    conversation = ConversationFactory(user=user)
    start = timezone.now()
    for n in range(55):
        MessageFactory(conversation=conversation, created_at=start + timedelta(seconds=n))

    first = api.get(messages_url(conversation)).json()
    second = api.get(messages_url(conversation), {"page": 2}).json()

    assert first["count"] == 55
    assert len(first["results"]) == 50
    assert len(second["results"]) == 5
    assert first["results"][0]["created_at"] < second["results"][0]["created_at"]


# --- ownership ---------------------------------------------------------------------------------


@pytest.fixture
def foreign_conversation(other_user):
    conversation = ConversationFactory(user=other_user, title="Bob's", adapter="default")
    MessageFactory(conversation=conversation, content="secret")
    return conversation


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("get", detail_url, None),
        ("patch", detail_url, {"title": "Taken"}),
        ("delete", detail_url, None),
        ("get", messages_url, None),
    ],
    ids=["retrieve", "patch", "delete", "messages"],
)
def test_another_users_conversation_is_a_404_and_stays_unchanged(
    api, foreign_conversation, method, url, body
):
    response = getattr(api, method)(url(foreign_conversation), body, format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}
    foreign_conversation.refresh_from_db()
    assert foreign_conversation.title == "Bob's"
    assert foreign_conversation.messages.get().content == "secret"


def test_another_users_conversation_answers_exactly_as_a_missing_one(api, foreign_conversation):
    missing = api.get("/api/conversations/00000000-0000-4000-8000-000000000000/")
    foreign = api.get(detail_url(foreign_conversation))

    assert (foreign.status_code, foreign.json()) == (missing.status_code, missing.json())
