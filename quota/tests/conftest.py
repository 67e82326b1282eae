"""Fixtures of the quota tests."""

from datetime import UTC, datetime

import pytest


@pytest.fixture
def a_day_in_june(settings, time_machine):
    """Time stands at 2026-06-15 19:00 UTC; daily periods of 100 requests and unlimited tokens."""
    time_machine.move_to(datetime(2026, 6, 15, 19, tzinfo=UTC), tick=False)
    settings.QUOTA_PERIOD = "day"
    settings.QUOTA_DEFAULT_REQUEST_LIMIT = 100
    settings.QUOTA_DEFAULT_TOKEN_LIMIT = None
    return settings
