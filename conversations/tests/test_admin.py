"""The operators' admin: conversations with their messages, messages with filters, bounded queries."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.utils import timezone

from conversations.admin import ConversationAdmin
from conversations.models import Conversation, Message
from conversations.tests.factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db

CONVERSATIONS = "/admin/conversations/conversation/"
MESSAGES = "/admin/conversations/message/"


def make_conversations(count, messages_each=3):
    conversations = ConversationFactory.create_batch(count)
    start = timezone.now()
    for conversation in conversations:
        for n in range(messages_each):
            MessageFactory(
                conversation=conversation,
                role="user" if n % 2 == 0 else "assistant",
                created_at=start + timedelta(seconds=n),
            )
    return conversations


def test_conversation_changelist_shows_owner_and_message_count(admin_client):
    conversation = ConversationFactory(title="Trip to Rome", user__username="carol")
    MessageFactory.create_batch(3, conversation=conversation)

    response = admin_client.get(CONVERSATIONS)

    assert response.status_code == 200
    row = response.context["cl"].result_list.get(pk=conversation.pk)
    assert row.message_count == 3
    content = response.content.decode()
    assert "Trip to Rome" in content
    assert "carol" in content


@pytest.mark.parametrize(
    ("query", "found"),
    [("Rome", True), ("carol", True), ("colosseum", True), ("Paris", False)],
    ids=["title", "owner", "message-text", "no-match"],
)
def test_conversation_changelist_searches_title_owner_and_message_text(admin_client, query, found):
    conversation = ConversationFactory(title="Trip to Rome", user__username="carol")
    MessageFactory(conversation=conversation, content="Tell me about the Colosseum")
    MessageFactory(conversation=conversation, content="And the colosseum at night")

    response = admin_client.get(CONVERSATIONS, {"q": query})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == ([conversation] if found else [])


def test_conversation_change_page_shows_its_messages_in_order(admin_client):
    conversation = ConversationFactory()
    at = timezone.now()
    MessageFactory(
        conversation=conversation, role="assistant", content="Second, the answer", created_at=at, position=1
    )
    MessageFactory(conversation=conversation, content="First, the question", created_at=at, position=0)

    response = admin_client.get(f"{CONVERSATIONS}{conversation.pk}/change/")

    assert response.status_code == 200
    content = response.content.decode()
    assert content.index("First, the question") < content.index("Second, the answer")


def test_message_changelist_filters_by_role_and_status(admin_client):
    streaming = MessageFactory(role="assistant", status="streaming", content="typing now")
    MessageFactory(role="assistant", status="complete", content="done answer")
    MessageFactory(role="user", content="a question")

    by_role = admin_client.get(MESSAGES, {"role__exact": "assistant"})
    by_status = admin_client.get(MESSAGES, {"status__exact": "streaming"})

    assert by_role.status_code == by_status.status_code == 200
    assert {m.role for m in by_role.context["cl"].result_list} == {"assistant"}
    assert by_role.context["cl"].result_count == 2
    assert list(by_status.context["cl"].result_list) == [streaming]


def test_message_changelist_searches_message_text(admin_client):
    wanted = MessageFactory(content="Where is the Colosseum?")
    MessageFactory(content="Something else")

    response = admin_client.get(MESSAGES, {"q": "colosseum"})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [wanted]


def test_message_change_page_loads(admin_client):
    message = MessageFactory(content="Look at me", role="assistant", total_tokens=5)

    response = admin_client.get(f"{MESSAGES}{message.pk}/change/")

    assert response.status_code == 200
    assert "Look at me" in response.content.decode()


def count_queries(django_assert_max_num_queries, admin_client, url, params=None):
    with django_assert_max_num_queries(1000) as captured:
        assert admin_client.get(url, params or {}).status_code == 200
    return len(captured.captured_queries)


@pytest.mark.parametrize(
    ("url", "params"),
    [
        (CONVERSATIONS, {}),
        (CONVERSATIONS, {"q": "message"}),
        (MESSAGES, {}),
        (MESSAGES, {"role__exact": "assistant"}),
    ],
    ids=["conversations", "conversations-search", "messages", "messages-filtered"],
)
def test_changelist_queries_do_not_grow_with_rows(admin_client, django_assert_max_num_queries, url, params):
    make_conversations(3)
    few = count_queries(django_assert_max_num_queries, admin_client, url, params)
    make_conversations(27)

    with django_assert_max_num_queries(few):
        response = admin_client.get(url, params)

    assert response.status_code == 200
    assert response.context["cl"].result_count >= 30
    assert few <= 15


def test_conversation_change_page_queries_do_not_grow_with_messages(
    admin_client, django_assert_max_num_queries
):
    small, large = make_conversations(1, messages_each=3)[0], make_conversations(1, messages_each=40)[0]
    few = count_queries(django_assert_max_num_queries, admin_client, f"{CONVERSATIONS}{small.pk}/change/")

    with django_assert_max_num_queries(few):
        assert admin_client.get(f"{CONVERSATIONS}{large.pk}/change/").status_code == 200


def test_a_superuser_can_delete_a_conversation_in_the_admin(admin_client):
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation)

    response = admin_client.post(f"{CONVERSATIONS}{conversation.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()


def test_a_conversation_with_a_live_stream_cannot_be_deleted_from_the_admin(admin_client):
    streaming = ConversationFactory(title="busy")
    MessageFactory(conversation=streaming, role="assistant", status="streaming", created_at=timezone.now())
    idle = ConversationFactory(title="idle")

    def delete_selected(*conversations):
        return admin_client.post(
            CONVERSATIONS,
            {"action": "delete_selected", "_selected_action": [c.pk for c in conversations], "post": "yes"},
        )

    assert admin_client.get(f"{CONVERSATIONS}{streaming.pk}/delete/").status_code == 403
    assert delete_selected(streaming, idle).status_code == 403
    assert Conversation.objects.count() == 2
    assert delete_selected(idle).status_code == 302
    assert list(Conversation.objects.values_list("title", flat=True)) == ["busy"]


def test_a_stream_starting_after_the_delete_permission_check_keeps_the_conversation(
    admin_client, monkeypatch
):
    conversation = ConversationFactory(title="busy soon")
    collect = ConversationAdmin.get_deleted_objects

    def collect_then_a_stream_starts(self, objs, request):
        found = collect(self, objs, request)  # after the permission check, before the delete
        MessageFactory(conversation=conversation, role="assistant", status="streaming")
        return found

    monkeypatch.setattr(ConversationAdmin, "get_deleted_objects", collect_then_a_stream_starts)
    response = admin_client.post(f"{CONVERSATIONS}{conversation.pk}/delete/", {"post": "yes"}, follow=True)

    assert response.status_code == 200
    content = response.content.decode()
    assert "“busy soon” was kept: an answer is still streaming." in content
    assert "deleted successfully" not in content
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()


def test_messages_are_read_only_in_the_admin(admin_client):
    message = MessageFactory(content="as streamed")

    page = admin_client.get(f"{MESSAGES}{message.pk}/change/")
    admin_client.post(f"{MESSAGES}{message.pk}/change/", {"content": "edited", "status": "complete"})

    assert page.status_code == 200
    assert 'name="content"' not in page.content.decode()
    message.refresh_from_db()
    assert message.content == "as streamed"
    assert admin_client.get(f"{MESSAGES}add/").status_code == 403
