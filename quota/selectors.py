"""Reads of quotas that need care: live reservations counted, and the admin's filters."""

from datetime import datetime

from django.conf import settings
from django.db.models import BigIntegerField, Case, Count, F, Q, QuerySet, Value, When

from quota.models import Quota
from quota.periods import period_floor

HAS_OVERRIDE = (
    Q(request_limit__isnull=False)
    | Q(unlimited_requests=True)
    | Q(token_limit__isnull=False)
    | Q(unlimited_tokens=True)
)


def quotas_with_reserved(*, now: datetime) -> QuerySet[Quota]:
    """Quotas with their user and `reserved_now`, the number of reservations live at `now`."""
    return Quota.objects.select_related("user").annotate(
        reserved_now=Count("reservations", filter=Q(reservations__expires_at__gt=now))
    )


def quotas_exhausted(queryset: QuerySet[Quota], *, now: datetime) -> QuerySet[Quota]:
    """Those of `quotas_with_reserved` that would refuse a request now (limits in effect, read live)."""
    floor = period_floor(settings.QUOTA_PERIOD, now)
    in_current_period = Q(period_start__gte=floor) if floor is not None else Q()
    return queryset.annotate(
        request_limit_now=_limit_in_effect(
            "request_limit", "unlimited_requests", settings.QUOTA_DEFAULT_REQUEST_LIMIT
        ),
        token_limit_now=_limit_in_effect(
            "token_limit", "unlimited_tokens", settings.QUOTA_DEFAULT_TOKEN_LIMIT
        ),
        requests_taken=F("requests_used") + F("reserved_now"),
    ).filter(
        in_current_period
        & (Q(requests_taken__gte=F("request_limit_now")) | Q(tokens_used__gte=F("token_limit_now")))
    )


def _limit_in_effect(override: str, unlimited: str, default: int | None) -> Case:
    """SQL for the limit in effect: NULL when unlimited (and NULL compares as never reached)."""
    return Case(
        When(**{unlimited: True}, then=Value(None)),
        When(**{f"{override}__isnull": False}, then=F(override)),
        default=Value(default),
        output_field=BigIntegerField(),
    )
