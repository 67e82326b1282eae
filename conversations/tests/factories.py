"""factory_boy factories for users, conversations and messages."""

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.utils import timezone

from conversations.models import Conversation, Message


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    # No usable password: hashing one per user would make the admin's 30-row tests slow.
    password = factory.LazyFunction(lambda: make_password(None))


class ConversationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversation

    user = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Conversation {n}")
    adapter = "default"


class MessageFactory(factory.django.DjangoModelFactory):
    """A complete user message by default; `role`, `status`, usage and error fields as needed."""

    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    role = Message.Role.USER
    content = factory.Sequence(lambda n: f"Message number {n}")
    status = Message.Status.COMPLETE
    created_at = factory.LazyFunction(timezone.now)
    updated_at = factory.SelfAttribute("created_at")
