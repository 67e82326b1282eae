"""The spec's `QuotaEnforcementService`: reserve, commit, release, renew, status, reset and sweep.

Plain synchronous functions with keyword-only arguments; async code (the streaming view) calls each
one, or the whole transaction it joins, through one `sync_to_async` call.

Exact under concurrency: `quota_reserve` locks the user's quota row (`FOR UPDATE`, in a statement of
its own) before the statement that counts the live reservations and inserts one, so of any number of
parallel reservations, across processes too, exactly as many succeed as there are requests remaining.
Counters change only by increments in the database (`used = used + n`, in `_count`), or are set to
zero when a period starts. A period that has ended is rolled over by the first write after its
boundary (`quota_reserve`, `quota_commit`); reads (`quota_status`, the admin) show that new, empty
period without writing it. One lock order everywhere: a transaction that writes both takes the quota
row before its reservations.

The statements on a stream's path (lock, sweep, reserve, count, release) are plain, portable SQL
(PostgreSQL and `make run`'s SQLite): under `make bench` the ORM's query building cost more CPU than
the round trips themselves. Everything else uses the ORM.
"""

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from chatsvc import rows
from quota import selectors
from quota.exceptions import ConditionFailed, QuotaExceeded, UnknownUsers
from quota.models import Quota, Reservation
from quota.periods import period_end, period_floor


@dataclass(frozen=True)
class QuotaStatus:
    """A user's quota at one moment: everything `GET /api/quota/` shows (None limits: unlimited)."""

    period: str
    period_start: datetime
    resets_at: datetime | None
    request_limit: int | None
    requests_used: int
    requests_reserved: int
    token_limit: int | None
    tokens_used: int

    @classmethod
    def of(cls, quota: Quota, *, reserved: int, now: datetime) -> "QuotaStatus":
        """The status of `quota` at `now`; a period that has ended reads as the new, empty one."""
        period = settings.QUOTA_PERIOD
        start, requests_used, tokens_used = quota.period_start, quota.requests_used, quota.tokens_used
        floor = period_floor(period, now)
        if floor is not None and start < floor:
            start, requests_used, tokens_used = floor, 0, 0
        return cls(
            period=period,
            period_start=start,
            resets_at=period_end(period, start),
            request_limit=quota.request_limit_in_effect,
            requests_used=requests_used,
            requests_reserved=reserved,
            token_limit=quota.token_limit_in_effect,
            tokens_used=tokens_used,
        )

    @property
    def requests_remaining(self) -> int | None:
        if self.request_limit is None:
            return None
        return max(0, self.request_limit - self.requests_used - self.requests_reserved)

    @property
    def tokens_remaining(self) -> int | None:
        if self.token_limit is None:
            return None
        return max(0, self.token_limit - self.tokens_used)

    @property
    def stream_quota(self) -> dict:
        """The `quota` object of the stream's `done` event."""
        return {
            "requests_remaining": self.requests_remaining,
            "tokens_remaining": self.tokens_remaining,
            "resets_at": self.resets_at.isoformat().replace("+00:00", "Z") if self.resets_at else None,
        }


@dataclass(frozen=True)
class ResetResult:
    """One user's counters before and after a reset."""

    username: str
    requests_before: int
    tokens_before: int
    requests_after: int = 0
    tokens_after: int = 0

    def summary(self, *, dry_run: bool = False) -> str:
        """`alice: requests 37 → 0, tokens 1234 → 0` (`alice: would reset requests …` for a dry run)."""
        verb = "would reset requests" if dry_run else "requests"
        return (
            f"{self.username}: {verb} {self.requests_before} → {self.requests_after}, "
            f"tokens {self.tokens_before} → {self.tokens_after}"
        )


def quota_reserve(
    *,
    user,
    along: tuple = (),
    end: bool = False,
    only_if: rows.Condition | None = None,
    now: datetime | None = None,
) -> Reservation:
    """Hold one request for a generation that is starting, or raise `QuotaExceeded`.

    Runs in its own transaction, or joins the caller's (which then holds the row lock until it ends).
    `along`: what the caller writes with the reservation, only when there is room, in its statement on
    PostgreSQL (`rows.insert`'s rows: the stream's question and answer, its conversation's touch).
    `end`: the reservation is the last write of the caller's transaction, which ends with it (on
    PostgreSQL in the same round trip): a refusal then keeps what the transaction wrote before it, so
    `along` must hold all of the caller's writes. A transaction of its own always ends so.
    `only_if`: a condition of the caller's, checked in the reservation's statement (a start's remembered
    token still valid: `chatsvc.authentication`); when it does not hold, nothing is reserved and
    `ConditionFailed` is raised.
    """
    if (along or end) and not connection.in_atomic_block:
        raise ValueError("quota_reserve(along=…, end=…) writes as a part of the caller's transaction.")
    now = now or timezone.now()
    end = end or not connection.in_atomic_block
    reservation = Reservation(
        id=Reservation.make_id(user.pk),
        quota_id=user.pk,
        created_at=now,
        renewed_at=now,
        expires_at=now + timedelta(seconds=settings.QUOTA_RESERVATION_TTL),
    )
    with transaction.atomic(savepoint=False):
        if _insert_if_room(reservation, along=along, end=end, only_if=only_if):
            return reservation
    if only_if is not None and not rows.holds(only_if):
        raise ConditionFailed
    # Raised after the block: on its own, the statement's rollover and sweep are kept (inside a caller's
    # transaction that did not end with it, they go with it, and are redone by the next reservation).
    status = _status(quota_id=user.pk, now=now)  # the quota as it is now, for the refusal's reason
    resource = "tokens" if status.tokens_remaining == 0 else "requests"
    raise QuotaExceeded(resource=resource, resets_at=status.resets_at, now=now)


def _insert_if_room(
    reservation: Reservation, *, along: tuple, end: bool, only_if: rows.Condition | None
) -> bool:
    """Lock the quota row (created first when missing: a user's first reservation); start its new period
    when the last one ended; delete its expired reservations; then insert `reservation` if the quota
    leaves room — tokens used under the token limit, requests used plus the live reservations under the
    request limit (in effect: the override or the default, none when unlimited: `Quota.…_limit_in_effect`)
    and `only_if` holds — and write `along` with it.

    On PostgreSQL one round trip: the lock, then one statement (`rows.insert`'s: the rollover, the sweep
    and the reservation CTEs of it, its count reading the snapshot taken once the lock is held, before the
    sweep: live reservations only), and with `end` the COMMIT. Elsewhere (SQLite, whose IMMEDIATE
    transactions hold the database's write lock) each is a statement of its own.
    """
    adapt = connection.ops.adapt_datetimefield_value
    now, quota_id = adapt(reservation.created_at), reservation.quota_id
    period_start = period_floor(settings.QUOTA_PERIOD, reservation.created_at)
    floor = adapt(period_start) if period_start is not None else None
    tokens, requests = settings.QUOTA_DEFAULT_TOKEN_LIMIT, settings.QUOTA_DEFAULT_REQUEST_LIMIT
    rollover = rows.Write(_ROLLOVER_SQL, [floor, quota_id, floor])
    sweep = rows.Write(
        "DELETE FROM quota_reservation WHERE quota_id = %s AND expires_at <= %s", [quota_id, now]
    )
    insert = rows.Write(
        _RESERVE_SQL if only_if is None else f"{_RESERVE_SQL}\nAND {only_if.sql}",
        [
            *(reservation.id, quota_id, now, adapt(reservation.renewed_at), adapt(reservation.expires_at)),
            *(quota_id, tokens, floor, tokens),  # in the order of the placeholders
            *(requests, floor, quota_id, now, requests),
            *(only_if.params if only_if is not None else ()),
        ],
    )
    new_quota = Quota(user_id=quota_id, period_start=period_start or reservation.created_at)
    first = [rows.inserting(new_quota, ignore_conflicts=True)]
    if connection.features.has_select_for_update:
        lock = f"SELECT 1 FROM quota_quota WHERE user_id = %s {connection.ops.for_update_sql()}"
        first.append(rows.Write(lock, [quota_id]))
    return rows.insert(*along, before=(rollover, sweep, insert), first=tuple(first), end=end) == 1


_ROLLOVER_SQL = (
    "UPDATE quota_quota SET requests_used = 0, tokens_used = 0, period_start = %s "
    "WHERE user_id = %s AND period_start < %s"
)

# The room, as `QuotaStatus` reckons it: counters read as zero once their period ended (`floor`).
# Prepared (`executing()`), a parameter takes the type of the column it meets: the default request
# limit is cast, or one over 2**31 - 1 would not fit `request_limit`'s integer.
_RESERVE_SQL = """
INSERT INTO quota_reservation (id, quota_id, created_at, renewed_at, expires_at)
SELECT %s, %s, %s, %s, %s FROM quota_quota
WHERE user_id = %s
AND (unlimited_tokens OR COALESCE(token_limit, %s) IS NULL
     OR CASE WHEN period_start < %s THEN 0 ELSE tokens_used END < COALESCE(token_limit, %s))
AND (unlimited_requests OR COALESCE(request_limit, CAST(%s AS bigint)) IS NULL
     OR CASE WHEN period_start < %s THEN 0 ELSE requests_used END
        + (SELECT count(*) FROM quota_reservation WHERE quota_id = %s AND expires_at > %s)
        < COALESCE(request_limit, CAST(%s AS bigint)))"""


def quota_commit(*, reservation_id: str, tokens: int, now: datetime | None = None) -> QuotaStatus:
    """Consume a reservation: one request plus `tokens`, counted in the period current now.

    Call it inside the caller's transaction (the one that writes the answer). A reservation already
    swept (its renewals stopped for longer than QUOTA_RESERVATION_TTL) is still charged. Returns the
    quota after the charge.
    """
    if tokens < 0:
        raise ValueError(f"tokens must be ≥ 0, not {tokens}.")
    now = now or timezone.now()
    quota_id = Reservation.quota_id_of(reservation_id)
    with transaction.atomic(savepoint=False):
        # The quota row first, as `quota_reserve` locks it before it deletes expired reservations:
        # the other order deadlocks with a start of the same user once this reservation expired.
        quota = _count(quota_id=quota_id, now=now, requests=1, tokens=tokens, settled=reservation_id)
    return QuotaStatus.of(quota, reserved=quota.reserved_now, now=now)


def quota_settle(
    *, reservation_id: str, tokens: int, charge: bool, provided: rows.Write, now: datetime | None = None
) -> tuple[bool, QuotaStatus | None]:
    """Run the caller's write `provided` (an answer's end) and settle the reservation on what it did:
    when it changed a row and `charge`, consume the reservation as `quota_commit` does; otherwise release
    it. Returns (whether `provided` changed a row, the quota after a charge or None).

    On PostgreSQL one statement, `provided` a CTE of it: the write and its charge commit together with
    no transaction around them. Elsewhere (SQLite) in one transaction.
    """
    if tokens < 0:
        raise ValueError(f"tokens must be ≥ 0, not {tokens}.")
    if connection.vendor != "postgresql":
        with transaction.atomic(savepoint=False):
            written = rows.run(provided) > 0
            if written and charge:
                return True, quota_commit(reservation_id=reservation_id, tokens=tokens, now=now)
            quota_release(reservation_id=reservation_id)
            return written, None
    now = now or timezone.now()
    params = _count_params(
        quota_id=Reservation.quota_id_of(reservation_id),
        now=now,
        requests=1,
        tokens=tokens,
        settled=reservation_id,
    )
    if params.keys() & provided.params.keys():
        raise ValueError(f"The parameters of {provided.sql!r} clash with the quota's.")
    params = {**params, **provided.params, "charge": charge}
    quota = rows.fetch(Quota, _settle_sql(provided.sql), params, "reserved_now", "provided")
    if quota.pk is None:  # nothing counted
        return quota.provided > 0, None
    return True, QuotaStatus.of(quota, reserved=quota.reserved_now, now=now)


def quota_release(*, reservation_id: str) -> None:
    """Give a reservation back unused (the generation failed or its client left)."""
    _execute("DELETE FROM quota_reservation WHERE id = %s", [reservation_id])


def quota_renew(*, reservation_id: str, now: datetime | None = None) -> None:
    """Keep a running stream's reservation alive for another QUOTA_RESERVATION_TTL (a heartbeat)."""
    now = now or timezone.now()
    expires_at = now + timedelta(seconds=settings.QUOTA_RESERVATION_TTL)
    rows.update(Reservation, {"id": reservation_id}, renewed_at=now, expires_at=expires_at)


def quota_status(*, user, now: datetime | None = None) -> QuotaStatus:
    """The user's quota now (its row is created on first use)."""
    return _status(quota_id=user.pk, now=now or timezone.now())


def _status(*, quota_id, now: datetime) -> QuotaStatus:
    quotas = selectors.quotas_with_reserved(now=now).select_related(None)
    try:
        quota = quotas.get(pk=quota_id)
    except Quota.DoesNotExist:
        _create_quotas(user_ids=[quota_id], now=now)
        quota = quotas.get(pk=quota_id)
    return QuotaStatus.of(quota, reserved=quota.reserved_now, now=now)


def quota_reset(
    *,
    usernames: list[str] | None = None,
    all_users: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[ResetResult]:
    """Set the used counters of some users, or of every user, to zero and start a new period now.

    Reservations of running streams are kept. An unknown username raises `UnknownUsers` and changes
    nothing. Results are ordered by username; with `dry_run`, nothing is written.
    """
    if not (usernames or all_users):
        raise ValueError("Name the users whose quotas to reset, or pass all_users=True.")
    now = now or timezone.now()
    user_model = get_user_model()
    users = user_model.objects.all()
    if not all_users:
        users = users.filter(**{f"{user_model.USERNAME_FIELD}__in": usernames})
    with transaction.atomic():
        names_by_id = dict(users.values_list("pk", user_model.USERNAME_FIELD))
        unknown = set(usernames or ()) - set(names_by_id.values())
        if unknown:
            raise UnknownUsers(list(unknown))
        quotas = Quota.objects.all() if all_users else Quota.objects.filter(pk__in=names_by_id)
        before = {
            quota.pk: QuotaStatus.of(quota, reserved=0, now=now)
            for quota in quotas.select_for_update().order_by("pk")  # one lock order: no deadlocks
        }
        results = [
            ResetResult(
                username=name,
                requests_before=before[pk].requests_used if pk in before else 0,
                tokens_before=before[pk].tokens_used if pk in before else 0,
            )
            for pk, name in sorted(names_by_id.items(), key=lambda item: item[1])
        ]
        if not dry_run:
            _create_quotas(user_ids=[pk for pk in names_by_id if pk not in before], now=now)
            quotas.update(requests_used=0, tokens_used=0, period_start=now)
    return results


def reservations_sweep(*, now: datetime | None = None) -> int:
    """Delete every expired reservation; returns how many there were."""
    deleted, _ = Reservation.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


def _create_quotas(*, user_ids: list, now: datetime) -> None:
    """Create the quota rows of these users (those that exist already are left as they are)."""
    start = period_floor(settings.QUOTA_PERIOD, now) or now
    Quota.objects.bulk_create(
        [Quota(user_id=user_id, period_start=start) for user_id in user_ids], ignore_conflicts=True
    )


def _execute(sql: str, params) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _count(*, quota_id, now: datetime, requests: int = 0, tokens: int = 0, settled: str = "") -> Quota:
    """Add to a quota's counters, in the period current at `now`: when the quota's period ended
    before it, the counters restart from zero and the period from its boundary. `settled`, the
    reservation being committed, is deleted after the quota row is written (the order `quota_reserve`
    locks them in). Returns the quota as written, with `reserved_now`, its live reservations but that one.

    One statement on PostgreSQL (two elsewhere), `used = used + n` as `F()` writes it, `RETURNING` the
    row; in plain SQL because on the stream's path the ORM's `Case`/`When` compilation and the read
    after it cost more than the round trip (`make bench` profile).
    """
    params = _count_params(quota_id=quota_id, now=now, requests=requests, tokens=tokens, settled=settled)
    in_one = bool(settled) and connection.vendor == "postgresql"
    quota = rows.fetch(Quota, _count_sql(settles=in_one), params, "reserved_now")
    if settled and not in_one:
        quota_release(reservation_id=settled)
    return quota


def _count_params(*, quota_id, now: datetime, requests: int, tokens: int, settled: str) -> dict:
    adapt = connection.ops.adapt_datetimefield_value
    floor = period_floor(settings.QUOTA_PERIOD, now)
    return {
        "floor": adapt(floor) if floor is not None else None,
        "now": adapt(now),
        "requests": requests,
        "tokens": tokens,
        "quota": quota_id,
        "settled": settled,
    }


_UPDATE_SQL = """
UPDATE quota_quota SET
    requests_used = CASE WHEN period_start < %(floor)s THEN 0 ELSE requests_used END + %(requests)s,
    tokens_used = CASE WHEN period_start < %(floor)s THEN 0 ELSE tokens_used END + %(tokens)s,
    period_start = CASE WHEN period_start < %(floor)s THEN %(floor)s ELSE period_start END
WHERE user_id = %(quota)s{condition}
RETURNING {columns}"""

_RESERVED_SQL = """(
    SELECT count(*) FROM quota_reservation
    WHERE quota_id = %(quota)s AND expires_at > %(now)s AND id <> %(settled)s
)"""


@functools.cache
def _count_sql(*, settles: bool) -> str:
    update = _UPDATE_SQL.format(condition="", columns=rows.columns(Quota))
    if not settles:
        return f"{update}, {_RESERVED_SQL}"
    # The delete reads `counted`: it runs once the quota row is written and locked.
    return f"""
WITH counted AS ({update}),
settled AS (DELETE FROM quota_reservation WHERE id = %(settled)s AND EXISTS (SELECT FROM counted))
SELECT counted.*, {_RESERVED_SQL} FROM counted"""


@functools.cache
def _settle_sql(provided: str) -> str:
    """`quota_settle`'s statement on PostgreSQL: `provided`, then the charge if it changed a row, then
    the reservation's delete, which reads `counted` so that it runs once the quota row is written and
    locked (when there is a charge). One row: the quota's columns (NULL without a charge), its other
    live reservations, and how many rows `provided` changed."""
    update = _UPDATE_SQL.format(
        condition=" AND %(charge)s AND EXISTS (SELECT FROM provided)", columns=rows.columns(Quota)
    )
    return f"""
WITH provided AS ({provided} RETURNING 1),
counted AS ({update}),
settled AS (DELETE FROM quota_reservation WHERE id = %(settled)s AND (SELECT count(*) FROM counted) <= 1)
SELECT counted.*, {_RESERVED_SQL}, (SELECT count(*) FROM provided)
FROM (SELECT) AS one LEFT JOIN counted ON true"""
