"""Each user's quota (limits, overrides, usage in the current period) and its reservations."""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class Quota(models.Model):
    """One user's quota; created on first use.

    Each limit is tri-state: by default it follows the settings (QUOTA_DEFAULT_*, read live, so a
    changed default applies at once); an operator may override it with a number, or with "unlimited".
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="quota"
    )
    request_limit = models.PositiveIntegerField(
        "request limit override",
        null=True,
        blank=True,
        help_text="Requests per period for this user. Empty: the default (QUOTA_DEFAULT_REQUEST_LIMIT).",
    )
    unlimited_requests = models.BooleanField(
        default=False, help_text="No request limit for this user (leave the override empty)."
    )
    token_limit = models.PositiveBigIntegerField(
        "token limit override",
        null=True,
        blank=True,
        help_text="Tokens per period for this user. Empty: the default (QUOTA_DEFAULT_TOKEN_LIMIT).",
    )
    unlimited_tokens = models.BooleanField(
        default=False, help_text="No token limit for this user (leave the override empty)."
    )
    # Changed only by the services, with F() updates (or set to zero when a period starts).
    requests_used = models.PositiveIntegerField(default=0, editable=False)
    tokens_used = models.PositiveBigIntegerField(default=0, editable=False)
    period_start = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(unlimited_requests=True, request_limit__isnull=False),
                name="quota_requests_limit_or_unlimited",
                violation_error_message="Give a request limit or tick “unlimited requests”, not both.",
            ),
            models.CheckConstraint(
                condition=~models.Q(unlimited_tokens=True, token_limit__isnull=False),
                name="quota_tokens_limit_or_unlimited",
                violation_error_message="Give a token limit or tick “unlimited tokens”, not both.",
            ),
        ]

    def __str__(self):
        return f"quota of {self.user}"

    @property
    def has_override(self) -> bool:
        return (
            self.unlimited_requests
            or self.unlimited_tokens
            or self.request_limit is not None
            or self.token_limit is not None
        )

    @property
    def request_limit_in_effect(self) -> int | None:
        """Requests allowed per period (None: unlimited): the override, or the live default."""
        if self.unlimited_requests:
            return None
        if self.request_limit is not None:
            return self.request_limit
        return settings.QUOTA_DEFAULT_REQUEST_LIMIT

    @property
    def token_limit_in_effect(self) -> int | None:
        """Tokens allowed per period (None: unlimited): the override, or the live default."""
        if self.unlimited_tokens:
            return None
        if self.token_limit is not None:
            return self.token_limit
        return settings.QUOTA_DEFAULT_TOKEN_LIMIT


class Reservation(models.Model):
    """One request held for a generation that has started and not yet ended; it lapses at `expires_at`.

    Its id is `<user id>:<random hex>`, so a generation whose reservation was swept (its renewals
    stopped for longer than QUOTA_RESERVATION_TTL) is still charged to the right user when it commits.
    """

    id = models.CharField(primary_key=True, max_length=80, editable=False)
    # Indexed by `reservation_quota_expiry`, which leads with `quota`.
    quota = models.ForeignKey(Quota, on_delete=models.CASCADE, related_name="reservations", db_index=False)
    created_at = models.DateTimeField()
    renewed_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["quota", "expires_at"], name="reservation_quota_expiry"),
            models.Index(fields=["expires_at"], name="reservation_expiry"),
        ]

    def __str__(self):
        return f"reservation {self.id} (expires {self.expires_at:%Y-%m-%d %H:%M:%S})"

    @staticmethod
    def make_id(quota_id) -> str:
        return f"{quota_id}:{uuid.uuid4().hex}"

    @staticmethod
    def quota_id_of(reservation_id: str) -> str:
        return str(reservation_id).rsplit(":", 1)[0]
