"""Conversations and their messages."""

import uuid

from django.conf import settings
from django.db import models


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    adapter = models.CharField(max_length=100, help_text="The alias in AI_ADAPTERS that answers here.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["user", "-updated_at"], name="conversation_user_updated")]

    def __str__(self):
        return self.title or str(self.id)


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        COMPLETE = "complete"
        STREAMING = "streaming"
        INTERRUPTED = "interrupted"
        FAILED = "failed"
        STOPPED = "stopped"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    # A user message and its answer share `created_at`; `position` keeps the question first.
    created_at = models.DateTimeField()
    position = models.PositiveSmallIntegerField(default=0, editable=False)
    # Renewed while the answer streams: the sweep tells a live stream from one whose process died.
    updated_at = models.DateTimeField()
    # An answer started with an `Idempotency-Key`: "<user pk>:<key>", unique, so two racing retries are
    # decided by the database; `idempotency_fingerprint` is the hash of the request body it answered.
    idempotency_key = models.CharField(max_length=300, null=True, blank=True, unique=True, editable=False)
    idempotency_fingerprint = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        ordering = ["created_at", "position"]
        indexes = [
            models.Index(
                fields=["conversation", "created_at", "position"], name="message_conversation_order"
            ),
            models.Index(
                fields=["updated_at"],
                name="message_streaming_updated",
                condition=models.Q(status="streaming"),
            ),
        ]

    def __str__(self):
        return f"{self.role}: {self.content[:60]}"

    @property
    def usage(self) -> dict | None:
        if self.total_tokens is None:
            return None
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    @property
    def error(self) -> dict | None:
        if not self.error_code:
            return None
        return {"code": self.error_code, "message": self.error_message}
