"""Quota periods: `day` and `month` (UTC calendar) or `never`, and their boundaries."""

from datetime import UTC, datetime, timedelta

PERIODS = ("day", "month", "never")


def period_floor(period: str, moment: datetime) -> datetime | None:
    """The most recent boundary at or before `moment`; None when the period never ends."""
    if period == "never":
        return None
    start_of_day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return start_of_day
    if period == "month":
        return start_of_day.replace(day=1)
    raise ValueError(f"Unknown quota period {period!r}; expected one of {', '.join(PERIODS)}.")


def period_end(period: str, start: datetime) -> datetime | None:
    """The first boundary after `start`: when a period that began at `start` resets (None: never)."""
    floor = period_floor(period, start)
    if floor is None:
        return None
    if period == "day":
        return floor + timedelta(days=1)
    return (floor + timedelta(days=32)).replace(day=1)
