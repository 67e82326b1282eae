"""The quota rules, against the real database: reserve, commit, release, renew, sweep, periods, limits."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from chatsvc import rows
from conversations.models import Conversation, Message
from quota.exceptions import QuotaExceeded
from quota.models import Quota, Reservation
from quota.services import (
    quota_commit,
    quota_release,
    quota_renew,
    quota_reserve,
    quota_settle,
    quota_status,
    reservations_sweep,
)
from quota.tests.factories import QuotaFactory, ReservationFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=600)


@pytest.fixture(autouse=True)
def quota_settings(settings, time_machine):
    time_machine.move_to(NOW, tick=False)
    settings.QUOTA_PERIOD = "day"
    settings.QUOTA_DEFAULT_REQUEST_LIMIT = 3
    settings.QUOTA_DEFAULT_TOKEN_LIMIT = None
    settings.QUOTA_RESERVATION_TTL = 600
    return settings


def reserve_all(user, count):
    return [quota_reserve(user=user) for _ in range(count)]


def test_first_reservation_creates_the_quota_starting_at_the_current_day(user):
    reservation = quota_reserve(user=user)

    quota = Quota.objects.get(user=user)
    assert quota.period_start == datetime(2026, 6, 15, tzinfo=UTC)
    assert reservation.quota == quota
    assert reservation.expires_at == NOW + TTL


def test_reservations_are_refused_once_used_plus_reserved_reaches_the_limit(user):
    QuotaFactory(user=user, requests_used=1)
    reserve_all(user, 2)

    with pytest.raises(QuotaExceeded) as refused:
        quota_reserve(user=user)

    assert refused.value.resource == "requests"
    status = quota_status(user=user)
    assert (status.requests_used, status.requests_reserved, status.requests_remaining) == (1, 2, 0)


def test_quota_exceeded_gives_the_whole_seconds_until_the_reset_rounded_up(user, time_machine):
    QuotaFactory(user=user, requests_used=3)
    time_machine.move_to(NOW + timedelta(microseconds=500_000), tick=False)

    with pytest.raises(QuotaExceeded) as refused:
        quota_reserve(user=user)

    assert refused.value.resets_at == datetime(2026, 6, 16, tzinfo=UTC)
    assert refused.value.retry_after == 12 * 3600  # 43 199.5 s, rounded up
    assert "2026-06-16 00:00 UTC" in refused.value.message


def test_commit_consumes_the_request_and_its_tokens_and_frees_the_reservation(user):
    first, second = reserve_all(user, 2)

    quota_commit(reservation_id=first.id, tokens=120)

    status = quota_status(user=user)
    assert (status.requests_used, status.requests_reserved, status.tokens_used) == (1, 1, 120)
    assert list(Reservation.objects.values_list("id", flat=True)) == [second.id]


def test_release_gives_the_request_back(user):
    reservations = reserve_all(user, 3)

    quota_release(reservation_id=reservations[0].id)

    status = quota_status(user=user)
    assert (status.requests_used, status.requests_reserved, status.requests_remaining) == (0, 2, 1)
    quota_reserve(user=user)


def test_reserve_joins_the_callers_transaction(user):
    def start_a_stream_that_fails():
        with transaction.atomic():
            quota_reserve(user=user)
            raise RuntimeError("the caller's unit of work fails after the reservation")

    with pytest.raises(RuntimeError):
        start_a_stream_that_fails()

    assert not Reservation.objects.exists()


def test_expired_reservations_are_not_counted_and_are_swept_before_a_reservation(user, other_user):
    reserve_all(user, 3)
    others = ReservationFactory(quota=QuotaFactory(user=other_user), expires_at=NOW)

    later = NOW + TTL
    assert quota_status(user=user, now=later).requests_remaining == 3
    fresh = quota_reserve(user=user, now=later)

    assert set(Reservation.objects.values_list("id", flat=True)) == {fresh.id, others.id}


def test_renewal_keeps_a_long_stream_reserved_past_its_first_expiry(user):
    reservation = quota_reserve(user=user)

    quota_renew(reservation_id=reservation.id, now=NOW + timedelta(seconds=500))

    assert reservations_sweep(now=NOW + TTL + timedelta(seconds=1)) == 0
    assert quota_status(user=user, now=NOW + TTL + timedelta(seconds=1)).requests_reserved == 1
    assert reservations_sweep(now=NOW + timedelta(seconds=1100)) == 1


def test_sweep_deletes_the_expired_reservations_of_every_user_and_counts_them(user, other_user):
    ReservationFactory(quota=QuotaFactory(user=user), expires_at=NOW - timedelta(seconds=1))
    ReservationFactory(quota=QuotaFactory(user=other_user), expires_at=NOW)
    live = ReservationFactory(quota=Quota.objects.get(user=user), expires_at=NOW + timedelta(seconds=1))

    assert reservations_sweep() == 2
    assert list(Reservation.objects.all()) == [live]


def test_a_swept_reservation_is_still_charged_when_its_generation_commits(user):
    reservation = quota_reserve(user=user)
    assert reservations_sweep(now=NOW + TTL) == 1

    quota_commit(reservation_id=reservation.id, tokens=50)

    quota = Quota.objects.get(user=user)
    assert (quota.requests_used, quota.tokens_used) == (1, 50)


def test_a_new_day_starts_at_the_first_use_after_midnight_from_the_boundary(user, time_machine):
    QuotaFactory(user=user, requests_used=3, tokens_used=900)
    with pytest.raises(QuotaExceeded):
        quota_reserve(user=user)

    time_machine.move_to(datetime(2026, 6, 16, 0, 0, 1, tzinfo=UTC), tick=False)
    status = quota_status(user=user)
    assert (status.period_start, status.requests_used, status.tokens_used) == (
        datetime(2026, 6, 16, tzinfo=UTC),
        0,
        0,
    )
    assert status.resets_at == datetime(2026, 6, 17, tzinfo=UTC)
    assert Quota.objects.get(user=user).requests_used == 3  # a read shows the new period, writes nothing

    quota_reserve(user=user)
    quota = Quota.objects.get(user=user)
    assert (quota.period_start, quota.requests_used, quota.tokens_used) == (
        datetime(2026, 6, 16, tzinfo=UTC),
        0,
        0,
    )


def test_a_new_month_starts_at_the_first_of_the_month(settings, user, time_machine):
    settings.QUOTA_PERIOD = "month"
    time_machine.move_to(datetime(2026, 6, 30, 23, 59, 59, tzinfo=UTC), tick=False)
    QuotaFactory(user=user, requests_used=3, period_start=datetime(2026, 6, 1, tzinfo=UTC))
    with pytest.raises(QuotaExceeded) as refused:
        quota_reserve(user=user)
    assert refused.value.retry_after == 1

    time_machine.move_to(datetime(2026, 7, 3, 10, tzinfo=UTC), tick=False)
    quota_reserve(user=user)

    status = quota_status(user=user)
    assert status.period_start == datetime(2026, 7, 1, tzinfo=UTC)
    assert status.resets_at == datetime(2026, 8, 1, tzinfo=UTC)
    assert (status.requests_used, status.requests_reserved) == (0, 1)


def test_a_generation_committed_after_the_boundary_counts_in_the_new_period(user, time_machine):
    QuotaFactory(user=user, requests_used=2, tokens_used=70)
    time_machine.move_to(datetime(2026, 6, 15, 23, 59, tzinfo=UTC), tick=False)
    reservation = quota_reserve(user=user)

    time_machine.move_to(datetime(2026, 6, 16, 0, 1, tzinfo=UTC), tick=False)
    quota_commit(reservation_id=reservation.id, tokens=10)

    quota = Quota.objects.get(user=user)
    assert (quota.period_start, quota.requests_used, quota.tokens_used) == (
        datetime(2026, 6, 16, tzinfo=UTC),
        1,
        10,
    )


def test_the_period_never_does_not_reset_and_gives_no_retry_after(settings, user, time_machine):
    settings.QUOTA_PERIOD = "never"
    QuotaFactory(user=user, requests_used=3, period_start=NOW - timedelta(days=400))
    time_machine.move_to(NOW + timedelta(days=400), tick=False)

    with pytest.raises(QuotaExceeded) as refused:
        quota_reserve(user=user)

    assert (refused.value.resets_at, refused.value.retry_after) == (None, None)
    assert quota_status(user=user).resets_at is None


def test_a_generation_may_carry_tokens_past_the_limit_and_the_next_request_is_refused(settings, user):
    settings.QUOTA_DEFAULT_TOKEN_LIMIT = 100
    reservation = quota_reserve(user=user)

    quota_commit(reservation_id=reservation.id, tokens=150)

    status = quota_status(user=user)
    assert (status.tokens_used, status.tokens_remaining, status.requests_remaining) == (150, 0, 2)
    with pytest.raises(QuotaExceeded) as refused:
        quota_reserve(user=user)
    assert refused.value.resource == "tokens"


def test_null_default_limits_are_unlimited(settings, user):
    settings.QUOTA_DEFAULT_REQUEST_LIMIT = None
    QuotaFactory(user=user, requests_used=10_000, tokens_used=10**9)

    reserve_all(user, 20)

    status = quota_status(user=user)
    assert (status.request_limit, status.requests_remaining) == (None, None)
    assert (status.token_limit, status.tokens_remaining) == (None, None)
    assert status.stream_quota == {
        "requests_remaining": None,
        "tokens_remaining": None,
        "resets_at": "2026-06-16T00:00:00Z",
    }


def test_a_changed_default_applies_at_once_to_users_without_override(settings, user):
    QuotaFactory(user=user, requests_used=2)
    settings.QUOTA_DEFAULT_REQUEST_LIMIT = 2
    with pytest.raises(QuotaExceeded):
        quota_reserve(user=user)

    settings.QUOTA_DEFAULT_REQUEST_LIMIT = 5
    assert quota_status(user=user).requests_remaining == 3
    quota_reserve(user=user)


def test_an_override_to_a_number_replaces_the_default_and_ignores_its_changes(settings, user):
    QuotaFactory(user=user, request_limit=1, token_limit=500)
    settings.QUOTA_DEFAULT_REQUEST_LIMIT = 1000
    settings.QUOTA_DEFAULT_TOKEN_LIMIT = 5

    quota_reserve(user=user)

    with pytest.raises(QuotaExceeded):
        quota_reserve(user=user)
    status = quota_status(user=user)
    assert (status.request_limit, status.token_limit, status.tokens_remaining) == (1, 500, 500)


def test_an_override_to_unlimited_lifts_the_default_limits(settings, user):
    settings.QUOTA_DEFAULT_REQUEST_LIMIT = 0
    settings.QUOTA_DEFAULT_TOKEN_LIMIT = 0
    QuotaFactory(user=user, unlimited_requests=True, unlimited_tokens=True, tokens_used=10**6)

    reserve_all(user, 5)

    status = quota_status(user=user)
    assert (status.request_limit, status.token_limit) == (None, None)


def test_an_override_to_zero_refuses_every_request(user):
    QuotaFactory(user=user, request_limit=0)

    with pytest.raises(QuotaExceeded):
        quota_reserve(user=user)


def test_a_limit_and_unlimited_together_are_refused_with_a_clear_message(user):
    quota = QuotaFactory.build(user=user, request_limit=5, unlimited_requests=True)

    with pytest.raises(ValidationError, match="not both"):
        quota.full_clean()


def test_status_of_a_user_without_a_quota_row_shows_the_defaults_and_creates_the_row(user):
    status = quota_status(user=user)

    assert (status.period, status.request_limit, status.requests_used, status.requests_remaining) == (
        "day",
        3,
        0,
        3,
    )
    assert status.period_start == datetime(2026, 6, 15, tzinfo=UTC)
    assert Quota.objects.filter(user=user).exists()


@pytest.fixture(params=["postgresql", "portable"])
def settle_path(request, monkeypatch):
    """`quota_settle` once as one PostgreSQL statement, once by its portable path (as on SQLite)."""
    if request.param == "portable":
        monkeypatch.setattr(connection, "vendor", "sqlite")
    return request.param


def renaming(user, to):
    """The caller's write in these tests: the user's first name, changed only while it is still empty."""
    return rows.updating(type(user), {"id": user.pk, "first_name": ""}, first_name=to)


def test_settle_runs_the_write_and_charges_its_reservation_when_it_changed_a_row(user, settle_path):
    first, second = reserve_all(user, 2)

    with CaptureQueriesContext(connection) as statements:
        written, status = quota_settle(
            reservation_id=first.id, tokens=42, charge=True, provided=renaming(user, "A")
        )

    assert written is True
    assert (status.requests_used, status.requests_reserved, status.tokens_used) == (1, 1, 42)
    assert list(Reservation.objects.values_list("id", flat=True)) == [second.id]
    user.refresh_from_db()
    assert user.first_name == "A"
    assert (len(statements) == 1) == (
        settle_path == "postgresql"
    )  # one statement, or the write then the charge


def test_settle_releases_without_a_charge_when_the_write_changed_nothing(user, settle_path):
    user.first_name = "already ended"
    user.save()
    reservation = quota_reserve(user=user)

    written, status = quota_settle(
        reservation_id=reservation.id, tokens=42, charge=True, provided=renaming(user, "B")
    )

    assert (written, status) == (False, None)
    assert not Reservation.objects.exists()
    assert Quota.objects.values_list("requests_used", "tokens_used").get(user=user) == (0, 0)
    user.refresh_from_db()
    assert user.first_name == "already ended"


def test_settle_without_charge_writes_and_gives_the_request_back(user, settle_path):
    reservation = quota_reserve(user=user)

    written, status = quota_settle(
        reservation_id=reservation.id, tokens=9, charge=False, provided=renaming(user, "C")
    )

    assert (written, status) == (True, None)
    assert not Reservation.objects.exists()
    assert quota_status(user=user).requests_used == 0
    user.refresh_from_db()
    assert user.first_name == "C"


def test_a_settle_after_the_boundary_counts_in_the_new_period(user, time_machine, settle_path):
    QuotaFactory(user=user, requests_used=2, tokens_used=70)
    time_machine.move_to(datetime(2026, 6, 15, 23, 59, tzinfo=UTC), tick=False)
    reservation = quota_reserve(user=user)

    time_machine.move_to(datetime(2026, 6, 16, 0, 1, tzinfo=UTC), tick=False)
    quota_settle(reservation_id=reservation.id, tokens=10, charge=True, provided=renaming(user, "D"))

    quota = Quota.objects.get(user=user)
    assert (quota.period_start, quota.requests_used, quota.tokens_used) == (
        datetime(2026, 6, 16, tzinfo=UTC),
        1,
        10,
    )


def test_settle_refuses_negative_tokens_and_a_write_whose_parameters_clash(user):
    reservation = quota_reserve(user=user)
    clashing = rows.Write(
        "UPDATE auth_user SET first_name = %(charge)s WHERE id = %(quota)s", {"charge": "x", "quota": user.pk}
    )

    with pytest.raises(ValueError, match="≥ 0"):
        quota_settle(reservation_id=reservation.id, tokens=-1, charge=True, provided=renaming(user, "E"))
    with pytest.raises(ValueError, match="clash"):
        quota_settle(reservation_id=reservation.id, tokens=1, charge=True, provided=clashing)

    assert Reservation.objects.filter(id=reservation.id).exists()
    user.refresh_from_db()
    assert user.first_name == ""


def along_rows(user):
    """Rows of another app that a reservation inserts with it: a conversation and a message of it."""
    conversation = Conversation(user=user, title="t", adapter="mock")
    message = Message(conversation=conversation, role="user", content="q", created_at=NOW, updated_at=NOW)
    return conversation, message


def test_reserve_inserts_the_callers_rows_with_the_reservation(user, settle_path):
    QuotaFactory(user=user)
    rows_ = along_rows(user)

    with transaction.atomic(), CaptureQueriesContext(connection) as statements:
        reservation = quota_reserve(user=user, along=rows_)

    assert Reservation.objects.filter(id=reservation.id).exists()
    assert Message.objects.get().conversation_id == rows_[0].pk
    # On PostgreSQL one round trip: the lock, then one statement (rollover, sweep, reservation and rows).
    written = [q["sql"] for q in statements if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert (len(written) == 1) == (settle_path == "postgresql")


def test_a_refused_reservation_rolls_its_callers_rows_back_with_the_transaction(user, settle_path):
    QuotaFactory(user=user, requests_used=3)

    with pytest.raises(QuotaExceeded), transaction.atomic():
        quota_reserve(user=user, along=along_rows(user))

    assert not Conversation.objects.exists()
    assert not Message.objects.exists()
    assert not Reservation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_reserve_refuses_rows_to_insert_outside_a_transaction(user):
    with pytest.raises(ValueError, match="transaction"):
        quota_reserve(user=user, along=along_rows(user))

    assert not Reservation.objects.exists()
    assert not Conversation.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the COMMIT rides on PostgreSQL only")
@pytest.mark.django_db(transaction=True)
def test_a_reservation_that_ends_the_transaction_commits_in_its_own_round_trip(user):
    rows_ = along_rows(user)
    with transaction.atomic(), CaptureQueriesContext(connection) as statements:
        reservation = quota_reserve(user=user, along=rows_, end=True)
        # Committed already, before the block's end: the server has no transaction open.
        assert connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert statements[-1]["sql"].endswith("; COMMIT")
    assert Reservation.objects.filter(id=reservation.id).exists()
    assert Message.objects.get().conversation_id == rows_[0].pk


@pytest.mark.django_db(transaction=True)
def test_a_refused_reservation_that_ends_the_transaction_writes_nothing_of_the_callers(user):
    QuotaFactory(user=user, requests_used=3)

    with pytest.raises(QuotaExceeded), transaction.atomic():
        quota_reserve(user=user, along=along_rows(user), end=True)

    assert not Conversation.objects.exists()
    assert not Message.objects.exists()
    assert not Reservation.objects.exists()


def test_inside_another_transaction_a_reservation_leaves_its_end_to_it(user):
    """A test's transaction around the caller's (a savepoint is open): no COMMIT is sent."""
    with transaction.atomic(), CaptureQueriesContext(connection) as statements:
        quota_reserve(user=user, along=along_rows(user), end=True)
    assert not any(q["sql"].endswith("COMMIT") for q in statements)
