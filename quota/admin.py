"""Operators' view of quotas: usage against limits at a glance, editable overrides, a reset action."""

import math
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.utils import timezone

from quota import selectors, services
from quota.models import Quota, Reservation

LIMIT_FIELDS = ["request_limit", "unlimited_requests", "token_limit", "unlimited_tokens"]


def in_words(delta: timedelta) -> str:
    """A short, rounded-up duration: `12 min`, `5 h`, `3 d`."""
    minutes = max(1, math.ceil(delta.total_seconds() / 60))
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{math.ceil(minutes / 60)} h"
    return f"{math.ceil(minutes / (24 * 60))} d"


def usage_text(used: int, limit: int | None, unit: str) -> str:
    return f"{used:,} {unit} (unlimited)" if limit is None else f"{used:,} / {limit:,} {unit}"


def resets_text(resets_at: datetime | None) -> str:
    if resets_at is None:
        return "never resets"
    return f"resets in {in_words(resets_at - timezone.now())}"


def default_limit_text() -> str:
    requests, tokens = settings.QUOTA_DEFAULT_REQUEST_LIMIT, settings.QUOTA_DEFAULT_TOKEN_LIMIT
    return (
        f"Empty override and “unlimited” unticked: the default applies, now "
        f"{'unlimited' if requests is None else f'{requests:,}'} requests and "
        f"{'unlimited' if tokens is None else f'{tokens:,}'} tokens per {settings.QUOTA_PERIOD} period."
    )


class HasOverrideFilter(admin.SimpleListFilter):
    title = "override"
    parameter_name = "override"

    def lookups(self, request, model_admin):
        return [("yes", "Has an override"), ("no", "Settings defaults")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(selectors.HAS_OVERRIDE)
        if self.value() == "no":
            return queryset.exclude(selectors.HAS_OVERRIDE)
        return queryset


class ExhaustedFilter(admin.SimpleListFilter):
    title = "exhausted"
    parameter_name = "exhausted"

    def lookups(self, request, model_admin):
        return [("yes", "Exhausted now")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return selectors.quotas_exhausted(queryset, now=timezone.now())
        return queryset


class ReservationInline(admin.TabularInline):
    model = Reservation
    fields = ["id", "created_at", "renewed_at", "expires_at"]
    readonly_fields = fields
    ordering = ["created_at"]
    extra = 0
    verbose_name_plural = "reservations (generations running now, or expired and not yet swept)"

    # View only: the streams own their reservations, and a view-only inline is not validated, so a
    # form loaded before a shown stream ended still saves.
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = ["user", "requests", "tokens", "reserved_now", "period_started", "override"]
    list_filter = [HasOverrideFilter, ExhaustedFilter]
    search_fields = [f"user__{get_user_model().USERNAME_FIELD}"]
    ordering = [f"user__{get_user_model().USERNAME_FIELD}"]
    autocomplete_fields = ["user"]
    actions = ["reset_selected_quotas"]
    readonly_fields = ["requests", "tokens", "reserved_now", "period_started"]
    inlines = [ReservationInline]

    def get_queryset(self, request):
        return selectors.quotas_with_reserved(now=timezone.now())

    def has_delete_permission(self, request, obj=None):
        # Deleting a quota would drop its usage and the reservations of running streams; reset instead.
        return False

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "user"] if obj else self.readonly_fields

    def get_fieldsets(self, request, obj=None):
        limits = (
            "Limits per period",
            {
                "fields": LIMIT_FIELDS,
                "description": default_limit_text(),
            },
        )
        if obj is None:
            return [(None, {"fields": ["user"]}), limits]
        usage = ("This period", {"fields": ["requests", "tokens", "reserved_now", "period_started"]})
        return [(None, {"fields": ["user"]}), limits, usage]

    def get_inlines(self, request, obj):
        return self.inlines if obj else []

    def save_model(self, request, obj, form, change):
        # Only the limits: the counters on `obj` were read before this save, and streams commit
        # charges with `used = used + n` meanwhile; writing them back would lose those charges.
        obj.save(update_fields=LIMIT_FIELDS if change else None)

    def _status(self, obj: Quota) -> services.QuotaStatus:
        return services.QuotaStatus.of(obj, reserved=obj.reserved_now, now=timezone.now())

    @admin.display(description="requests", ordering="requests_used")
    def requests(self, obj: Quota) -> str:
        status = self._status(obj)
        text = usage_text(status.requests_used, status.request_limit, "requests")
        return f"{text} · {resets_text(status.resets_at)}"

    @admin.display(description="tokens", ordering="tokens_used")
    def tokens(self, obj: Quota) -> str:
        status = self._status(obj)
        return usage_text(status.tokens_used, status.token_limit, "tokens")

    @admin.display(description="reserved now", ordering="reserved_now")
    def reserved_now(self, obj: Quota) -> int:
        return obj.reserved_now

    @admin.display(description="period start", ordering="period_start")
    def period_started(self, obj: Quota) -> datetime:
        return self._status(obj).period_start

    @admin.display(description="override", boolean=True)
    def override(self, obj: Quota) -> bool:
        return obj.has_override

    @admin.action(description="Reset selected quotas", permissions=["change"])
    def reset_selected_quotas(self, request, queryset):
        usernames = list(queryset.values_list(f"user__{get_user_model().USERNAME_FIELD}", flat=True))
        results = services.quota_reset(usernames=usernames)
        summary = "; ".join(result.summary() for result in results)
        self.message_user(request, f"Reset {len(results)} quota(s): {summary}", messages.SUCCESS)
