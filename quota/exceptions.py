"""The quota app's domain errors; the view layer turns them into HTTP answers."""

import math
from datetime import datetime


class QuotaExceeded(Exception):
    """The user's quota has no room for another request (HTTP 429, code `quota_exceeded`).

    `resets_at` is when the period ends (None for the period `never`); `retry_after` is the whole
    number of seconds until then, rounded up (None for `never`): the value of a `Retry-After` header.
    """

    def __init__(self, *, resource: str, resets_at: datetime | None, now: datetime):
        self.resource = resource  # "requests" or "tokens"
        self.resets_at = resets_at
        quota = "request quota" if resource == "requests" else "token quota"
        if resets_at is None:
            self.retry_after = None
            self.message = f"Your {quota} is used up; it does not reset by itself."
        else:
            self.retry_after = max(1, math.ceil((resets_at - now).total_seconds()))
            self.message = (
                f"Your {quota} is used up until {resets_at:%Y-%m-%d %H:%M} UTC (in {self.retry_after} s)."
            )
        super().__init__(self.message)


class ConditionFailed(Exception):
    """The condition a reservation was asked under (`quota_reserve(only_if=…)`) did not hold: nothing
    was reserved."""


class UnknownUsers(Exception):
    """Some of the usernames given name no user."""

    def __init__(self, usernames: list[str]):
        self.usernames = sorted(usernames)
        super().__init__(f"No such user: {', '.join(self.usernames)}.")
