"""The conversation rules: the title filled from the first message, an exchange's messages, the context."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chatsvc import rows
from conversations import selectors, services
from conversations.models import Conversation, Message
from conversations.tests.factories import ConversationFactory, MessageFactory


@pytest.mark.parametrize(
    ("content", "title"),
    [
        ("Hello there", "Hello there"),
        ("  Plan   a\ttrip\u00a0to Rome  \nwith details", "Plan a trip to Rome"),
        ("\n\n  First real line\nsecond", "First real line"),
        ("Windows line\r\nnext", "Windows line"),
        ("x" * 60, "x" * 60),
        ("x" * 61, "x" * 59 + "…"),
        ("word " * 30, ("word " * 12)[:59] + "…"),
        ("   ", ""),
    ],
    ids=["plain", "whitespace", "leading-blank-lines", "crlf", "exactly-60", "61", "long-words", "blank"],
)
def test_title_from_message_takes_the_first_line_collapsed_and_cut_to_sixty(content, title):
    assert services.title_from_message(content) == title
    assert len(services.title_from_message(content)) <= 60


@pytest.mark.django_db
def test_exchange_start_adds_the_question_and_a_streaming_answer_in_order():
    conversation = ConversationFactory(title="")

    exchange = services.exchange_start(conversation=conversation, content="Hi\nthere", context_limit=10)

    stored = list(selectors.message_list(conversation=conversation))
    assert stored == [exchange.question, exchange.answer]
    assert (stored[0].role, stored[0].content, stored[0].status) == ("user", "Hi\nthere", "complete")
    assert (stored[1].role, stored[1].content, stored[1].status) == ("assistant", "", "streaming")
    assert stored[0].created_at == stored[1].created_at


@pytest.mark.django_db
def test_a_draft_conversation_is_stored_with_its_first_exchange_in_one_statement(user):
    conversation = services.conversation_draft(user=user, adapter="default", title="Hi")
    assert not Conversation.objects.filter(pk=conversation.pk).exists()

    with CaptureQueriesContext(connection) as queries:
        exchange = services.exchange_start(
            conversation=conversation, content="Hi", context_limit=10, new_conversation=True
        )

    assert len(queries) == 1  # the conversation's INSERT a CTE of the messages'
    stored = Conversation.objects.get(pk=conversation.pk)
    assert (stored.user, stored.title, stored.adapter) == (user, "Hi", "default")
    assert list(selectors.message_list(conversation=stored)) == [exchange.question, exchange.answer]
    assert exchange.context == [{"role": "user", "content": "Hi"}]


@pytest.mark.django_db
def test_an_exchange_not_stored_leaves_its_rows_to_the_caller_parents_first(user):
    conversation = services.conversation_draft(user=user, adapter="default", title="Hi")

    with CaptureQueriesContext(connection) as queries:
        exchange = services.exchange_start(
            conversation=conversation, content="Hi", context_limit=10, new_conversation=True, store=False
        )

    assert len(queries) == 0
    assert exchange.rows == (conversation, exchange.question, exchange.answer)
    rows.insert(*exchange.rows)
    assert list(selectors.message_list(conversation=conversation)) == [exchange.question, exchange.answer]


@pytest.mark.django_db
def test_a_draft_whose_exchange_fails_leaves_no_conversation(user):
    """The messages' INSERT fails (an idempotency key taken): the conversation's, in its CTE, goes too."""
    taken = services.exchange_start(
        conversation=ConversationFactory(user=user), content="q", context_limit=1, idempotency_key="1:k"
    )
    draft = services.conversation_draft(user=user, adapter="default")
    with pytest.raises(IntegrityError), transaction.atomic():
        services.exchange_start(conversation=draft, content="q", context_limit=1, idempotency_key="1:k")
    assert not Conversation.objects.filter(pk=draft.pk).exists()
    assert Message.objects.get(idempotency_key="1:k") == taken.question


def exchange_on(user, conversation, content):
    """A new exchange on a stored conversation, as a stream's start makes it (its row claimed first)."""
    with transaction.atomic():
        claimed = services.conversation_for_exchange(user=user, conversation_id=conversation.pk)
        services.exchange_start(conversation=claimed, content=content, context_limit=10)
    return claimed


@pytest.mark.django_db
def test_an_exchange_fills_an_empty_title_and_moves_updated_at(user):
    conversation = ConversationFactory(user=user, title="")
    long_ago = timezone.now() - timedelta(days=1)
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=long_ago)

    claimed = exchange_on(user, conversation, "  What is   the weather?\nIn Rome")

    stored = Conversation.objects.get(pk=conversation.pk)
    assert stored.title == claimed.title == "What is the weather?"
    assert stored.updated_at == claimed.updated_at > long_ago
    assert claimed.adapter == stored.adapter


@pytest.mark.django_db
def test_an_exchange_keeps_an_existing_title(user):
    conversation = ConversationFactory(user=user, title="Chosen by hand")

    exchange_on(user, conversation, "Something else")

    assert Conversation.objects.get(pk=conversation.pk).title == "Chosen by hand"


@pytest.mark.django_db
def test_an_exchange_cuts_a_long_first_line_with_an_ellipsis(user):
    conversation = ConversationFactory(user=user, title="")

    exchange_on(user, conversation, "a" * 100)

    assert Conversation.objects.get(pk=conversation.pk).title == "a" * 59 + "…"


@pytest.mark.django_db
def test_conversation_for_exchange_only_locks_the_row(user):
    """The claim writes nothing: the exchange's touch is written with the exchange (a refused start
    leaves the conversation as it was)."""
    conversation = ConversationFactory(user=user, title="")
    before = Conversation.objects.get(pk=conversation.pk)

    with transaction.atomic():
        services.conversation_for_exchange(user=user, conversation_id=conversation.pk)

    after = Conversation.objects.get(pk=conversation.pk)
    assert (after.title, after.updated_at) == (before.title, before.updated_at)


@pytest.mark.django_db
def test_conversation_for_exchange_does_not_find_another_users_conversation(user, other_user):
    conversation = ConversationFactory(user=other_user, title="")

    with pytest.raises(Conversation.DoesNotExist):
        services.conversation_for_exchange(user=user, conversation_id=conversation.pk)


@pytest.mark.django_db
def test_conversation_update_moves_updated_at():
    conversation = ConversationFactory(title="Old")
    long_ago = timezone.now() - timedelta(days=1)
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=long_ago)
    conversation.refresh_from_db()

    services.conversation_update(conversation=conversation, title="New")

    stored = Conversation.objects.get(pk=conversation.pk)
    assert stored.title == "New"
    assert stored.updated_at > long_ago


@pytest.mark.django_db
def test_conversation_delete_refuses_while_an_answer_streams():
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING)

    with pytest.raises(services.StreamInProgress):
        services.conversation_delete(conversation=conversation)

    assert Conversation.objects.filter(pk=conversation.pk).exists()


@pytest.mark.django_db
def test_message_finish_writes_content_status_usage_and_error():
    conversation = ConversationFactory()
    answer = services.exchange_start(conversation=conversation, content="Hi", context_limit=10).answer

    written = rows.run(
        services.message_finish(
            message_id=answer.pk,
            content="Partial",
            status=Message.Status.FAILED,
            usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            error_code="adapter_error",
            error_message="The AI service failed.",
        )
    )

    answer.refresh_from_db()
    assert written == 1
    assert (answer.content, answer.status) == ("Partial", "failed")
    assert answer.usage == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert answer.error == {"code": "adapter_error", "message": "The AI service failed."}


@pytest.mark.django_db
def test_an_answers_end_is_written_once_and_never_rewritten():
    conversation = ConversationFactory()
    answer = services.exchange_start(conversation=conversation, content="Hi", context_limit=10).answer

    first = rows.run(
        services.message_finish(message_id=answer.pk, content="All of it", status=Message.Status.COMPLETE)
    )
    second = rows.run(
        services.message_finish(
            message_id=answer.pk, content="", status=Message.Status.FAILED, error_code="internal_error"
        )
    )

    answer.refresh_from_db()
    assert (first, second) == (1, 0)
    assert (answer.content, answer.status, answer.error) == ("All of it", "complete", None)


@pytest.mark.django_db
def test_messages_sweep_stale_interrupts_only_streams_not_renewed():
    now = timezone.now()
    stale = MessageFactory(role="assistant", status="streaming", created_at=now - timedelta(hours=1))
    live = MessageFactory(role="assistant", status="streaming", created_at=now)
    done = MessageFactory(role="assistant", status="complete", created_at=now - timedelta(hours=1))

    swept = services.messages_sweep_stale(updated_before=now - timedelta(minutes=10))

    assert swept == 1
    assert Message.objects.get(pk=stale.pk).status == "interrupted"
    assert Message.objects.get(pk=live.pk).status == "streaming"
    assert Message.objects.get(pk=done.pk).status == "complete"


# --- the context window ------------------------------------------------------------------------


@pytest.mark.django_db
def test_exchange_context_is_the_last_messages_with_content_oldest_first():
    conversation = ConversationFactory()
    start = timezone.now() - timedelta(minutes=10)
    for n in range(5):
        at = start + timedelta(seconds=n)
        MessageFactory(conversation=conversation, content=f"q{n}", created_at=at)
        MessageFactory(
            conversation=conversation, role="assistant", content=f"a{n}", created_at=at, position=1
        )
    unanswered = start + timedelta(seconds=9)
    MessageFactory(conversation=conversation, role="assistant", content="", created_at=unanswered)
    MessageFactory(content="another conversation", created_at=start + timedelta(hours=1))

    exchange = services.exchange_start(conversation=conversation, content="q5", context_limit=4)

    assert exchange.context == [
        {"role": "assistant", "content": "a3"},
        {"role": "user", "content": "q4"},
        {"role": "assistant", "content": "a4"},
        {"role": "user", "content": "q5"},
    ]


@pytest.mark.django_db
def test_exchange_context_orders_a_question_before_its_answer_at_the_same_instant():
    conversation = ConversationFactory()
    at = timezone.now() - timedelta(minutes=1)
    MessageFactory(conversation=conversation, role="assistant", content="answer", created_at=at, position=1)
    MessageFactory(conversation=conversation, content="question", created_at=at, position=0)

    exchange = services.exchange_start(conversation=conversation, content="next", context_limit=10)

    assert [item["content"] for item in exchange.context] == ["question", "answer", "next"]


@pytest.mark.django_db
def test_exchange_context_of_a_new_conversation_is_the_question():
    conversation = ConversationFactory()

    exchange = services.exchange_start(conversation=conversation, content="only", context_limit=10)

    assert exchange.context == [{"role": "user", "content": "only"}]


@pytest.mark.django_db
def test_conversation_delete_goes_ahead_when_the_streaming_answer_is_no_longer_renewed(settings):
    settings.QUOTA_RESERVATION_TTL = 600
    conversation = ConversationFactory()
    long_ago = timezone.now() - timedelta(seconds=601)
    MessageFactory(conversation=conversation, role="assistant", status="streaming", created_at=long_ago)

    services.conversation_delete(conversation=conversation)

    assert not Conversation.objects.filter(pk=conversation.pk).exists()


@pytest.mark.django_db
def test_exchange_in_a_new_conversation_reads_no_earlier_messages(django_assert_num_queries):
    conversation = ConversationFactory()

    with django_assert_num_queries(1):  # the insert of both messages, no read
        exchange = services.exchange_start(
            conversation=conversation, content="first", context_limit=10, new_conversation=True
        )

    assert exchange.context == [{"role": "user", "content": "first"}]
