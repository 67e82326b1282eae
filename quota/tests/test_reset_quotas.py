"""`manage.py reset_quotas` and `quota_reset`: zero the counters, start a new period, keep reservations."""

import subprocess
import sys
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from quota.models import Quota, Reservation
from quota.services import quota_reset
from quota.tests.factories import QuotaFactory, ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 15, 14, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen(time_machine, settings):
    settings.QUOTA_PERIOD = "day"
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def quotas(user, other_user):
    """alice 37 requests / 1234 tokens with a running stream, bob 5 / 60, carol who never used hers."""
    alice = QuotaFactory(user=user, requests_used=37, tokens_used=1234)
    ReservationFactory(quota=alice)
    QuotaFactory(user=other_user, requests_used=5, tokens_used=60)
    UserFactory(username="carol")
    return alice


def reset_quotas(*args) -> str:
    out = StringIO()
    call_command("reset_quotas", *args, stdout=out)
    return out.getvalue()


def usage() -> dict[str, tuple]:
    return {
        quota.user.username: (quota.requests_used, quota.tokens_used, quota.period_start)
        for quota in Quota.objects.select_related("user")
    }


def test_reset_all_zeroes_every_user_starts_a_period_now_and_keeps_running_reservations(quotas):
    output = reset_quotas("--all")

    assert output.splitlines() == [
        "alice: requests 37 → 0, tokens 1234 → 0",
        "bob: requests 5 → 0, tokens 60 → 0",
        "carol: requests 0 → 0, tokens 0 → 0",
    ]
    assert usage() == {name: (0, 0, NOW) for name in ("alice", "bob", "carol")}
    assert Reservation.objects.filter(quota=quotas).count() == 1


def test_reset_named_users_leaves_the_others_alone(quotas, django_user_model):
    dave = QuotaFactory(user=UserFactory(username="dave"), requests_used=9)

    output = reset_quotas("--user", "bob", "--user", "alice")

    assert output.splitlines() == [
        "alice: requests 37 → 0, tokens 1234 → 0",
        "bob: requests 5 → 0, tokens 60 → 0",
    ]
    assert usage()["alice"] == usage()["bob"] == (0, 0, NOW)
    dave.refresh_from_db()
    assert dave.requests_used == 9


def test_dry_run_reports_what_it_would_do_and_changes_nothing(quotas):
    before = usage()

    output = reset_quotas("--all", "--dry-run")

    assert output.splitlines()[0] == "alice: would reset requests 37 → 0, tokens 1234 → 0"
    assert len(output.splitlines()) == 3
    assert usage() == before


def test_the_usage_reported_is_that_of_the_current_period(quotas, time_machine):
    time_machine.move_to(datetime(2026, 6, 16, 9, tzinfo=UTC), tick=False)

    assert reset_quotas("--user", "alice").splitlines() == ["alice: requests 0 → 0, tokens 0 → 0"]


def test_without_a_selector_it_says_why_and_exits_2(quotas):
    before = usage()

    with pytest.raises(CommandError, match="--all, or --user NAME") as error:
        reset_quotas()

    assert error.value.returncode == 2
    assert usage() == before


def test_an_unknown_user_is_named_exits_2_and_nothing_is_changed(quotas):
    before = usage()

    with pytest.raises(CommandError, match=r"No such user: mallory\. Nothing was changed\.") as error:
        reset_quotas("--user", "alice", "--user", "mallory")

    assert error.value.returncode == 2
    assert usage() == before


def test_the_real_exit_code_without_a_selector_is_2():
    result = subprocess.run(
        [sys.executable, "manage.py", "reset_quotas"],
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "--all, or --user NAME" in result.stderr


def test_quota_reset_needs_a_selector():
    with pytest.raises(ValueError, match="all_users"):
        quota_reset()
