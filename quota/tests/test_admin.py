"""The quota admin: usage at a glance in bounded queries, filters, overrides, the reset action."""

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from quota.admin import QuotaAdmin
from quota.models import Quota
from quota.services import quota_commit, quota_reserve
from quota.tests.factories import QuotaFactory, ReservationFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("a_day_in_june")]

CHANGELIST = reverse("admin:quota_quota_changelist")


@pytest.fixture
def alice(user):
    quota = QuotaFactory(user=user, requests_used=37, tokens_used=1234)
    ReservationFactory(quota=quota)
    return quota


def test_changelist_reads_at_a_glance_in_a_bounded_number_of_queries(
    admin_client, alice, django_assert_max_num_queries
):
    for number in range(20):
        ReservationFactory.create_batch(2, quota=QuotaFactory(user=UserFactory(username=f"u{number}")))

    with django_assert_max_num_queries(6):  # session, user, two counts, the page
        response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    content = response.content.decode()
    assert "37 / 100 requests · resets in 5 h" in content
    assert "1,234 tokens (unlimited)" in content
    assert content.count("0 / 100 requests") == 20


def test_exhausted_filter_lists_the_users_who_would_be_refused_now(admin_client, alice, other_user):
    QuotaFactory(user=other_user, requests_used=99)
    ReservationFactory(quota=other_user.quota)
    QuotaFactory(user=UserFactory(username="carol"), request_limit=10, requests_used=10)
    QuotaFactory(
        user=UserFactory(username="dave"), requests_used=100, period_start=datetime(2026, 6, 14, tzinfo=UTC)
    )

    response = admin_client.get(CHANGELIST, {"exhausted": "yes"})

    assert [quota.user.username for quota in response.context["cl"].result_list] == ["bob", "carol"]


def test_override_filter_separates_overrides_from_defaults(admin_client, alice, other_user):
    QuotaFactory(user=other_user, unlimited_tokens=True)

    overridden = admin_client.get(CHANGELIST, {"override": "yes"}).context["cl"].result_list
    defaults = admin_client.get(CHANGELIST, {"override": "no"}).context["cl"].result_list

    assert [quota.user.username for quota in overridden] == ["bob"]
    assert [quota.user.username for quota in defaults] == ["alice"]


def test_reset_action_zeroes_the_selected_quotas_only(admin_client, alice, other_user):
    bob = QuotaFactory(user=other_user, requests_used=5)
    carol = QuotaFactory(user=UserFactory(username="carol"), requests_used=8)

    response = admin_client.post(
        CHANGELIST,
        {"action": "reset_selected_quotas", "_selected_action": [alice.pk, bob.pk]},
        follow=True,
    )

    assert "alice: requests 37 → 0, tokens 1234 → 0; bob: requests 5 → 0" in response.content.decode()
    used = dict(Quota.objects.values_list("user__username", "requests_used"))
    assert used == {"alice": 0, "bob": 0, "carol": 8}
    assert alice.reservations.count() == 1
    carol.refresh_from_db()
    assert carol.period_start == datetime(2026, 6, 15, tzinfo=UTC)


def test_an_operator_can_give_a_user_without_a_quota_row_an_override(admin_client, other_user):
    response = admin_client.post(
        reverse("admin:quota_quota_add"),
        {"user": other_user.pk, "request_limit": "", "unlimited_requests": "on", "token_limit": "500"},
    )

    assert response.status_code == 302
    quota = Quota.objects.get(user=other_user)
    assert (quota.request_limit_in_effect, quota.token_limit_in_effect) == (None, 500)


def test_change_form_shows_usage_and_saves_an_override(admin_client, alice):
    url = reverse("admin:quota_quota_change", args=[alice.pk])
    assert "37 / 100 requests" in admin_client.get(url).content.decode()

    response = admin_client.post(url, change_form_data(alice, request_limit="40"))

    assert response.status_code == 302
    alice.refresh_from_db()
    assert (alice.request_limit_in_effect, alice.requests_used) == (40, 37)


def test_saving_a_stale_change_form_keeps_the_charges_committed_since_it_was_loaded(
    admin_client, alice, monkeypatch
):
    running = alice.reservations.get()
    url = reverse("admin:quota_quota_change", args=[alice.pk])
    assert admin_client.get(url).status_code == 200
    stale = change_form_data(alice, request_limit="40")  # as loaded: 37 requests, one reservation shown
    quota_commit(reservation_id=running.id, tokens=10)  # the stream shown there ends meanwhile
    read_for_the_post = QuotaAdmin.get_object

    def read_then_another_stream_ends(self, request, object_id, from_field=None):
        quota = read_for_the_post(self, request, object_id, from_field)
        quota_commit(reservation_id=quota_reserve(user=alice.user).id, tokens=5)
        return quota

    # Between the POST's read of the row and its write, one more charge lands.
    monkeypatch.setattr(QuotaAdmin, "get_object", read_then_another_stream_ends)
    response = admin_client.post(url, stale)

    assert response.status_code == 302
    alice.refresh_from_db()
    assert (alice.request_limit, alice.requests_used, alice.tokens_used) == (40, 39, 1249)
    assert alice.reservations.count() == 0


def test_change_form_refuses_a_limit_together_with_unlimited(admin_client, alice):
    url = reverse("admin:quota_quota_change", args=[alice.pk])

    response = admin_client.post(url, change_form_data(alice, request_limit="5", unlimited_requests="on"))

    assert response.status_code == 200
    assert "not both" in response.content.decode()
    alice.refresh_from_db()
    assert (alice.request_limit, alice.unlimited_requests) == (None, False)


def change_form_data(quota: Quota, **fields) -> dict:
    """The change form's POST: the override fields, and the reservations inline as shown."""
    reservations = list(quota.reservations.all())
    data = {
        "request_limit": "",
        "token_limit": "",
        "reservations-TOTAL_FORMS": str(len(reservations)),
        "reservations-INITIAL_FORMS": str(len(reservations)),
        **fields,
    }
    for index, reservation in enumerate(reservations):
        data[f"reservations-{index}-id"] = reservation.id
        data[f"reservations-{index}-quota"] = quota.pk
    return data
