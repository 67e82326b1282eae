"""Period boundaries: UTC days and calendar months, or none."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from quota.periods import period_end, period_floor


def test_day_boundaries_are_utc_midnights_whatever_the_offset_of_the_moment():
    moment = datetime(2026, 3, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))  # 2026-02-28 23:30 UTC
    assert period_floor("day", moment) == datetime(2026, 2, 28, tzinfo=UTC)
    assert period_end("day", moment) == datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime(2026, 1, 31, 23, 59, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)),
        (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
        (datetime(2026, 12, 15, 8, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_a_month_ends_on_the_first_of_the_next_calendar_month(start, end):
    assert period_end("month", start) == end


def test_the_period_never_has_no_boundaries():
    moment = datetime(2026, 5, 5, tzinfo=UTC)
    assert period_floor("never", moment) is None
    assert period_end("never", moment) is None


def test_an_unknown_period_is_a_clear_error():
    with pytest.raises(ValueError, match="weekly"):
        period_floor("weekly", datetime(2026, 5, 5, tzinfo=UTC))
