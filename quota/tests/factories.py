"""Factories for quota tests."""

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from quota.models import Quota, Reservation


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")


class QuotaFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Quota

    user = factory.SubFactory(UserFactory)
    period_start = factory.LazyFunction(
        lambda: timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    )


class ReservationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Reservation

    quota = factory.SubFactory(QuotaFactory)
    id = factory.LazyAttribute(lambda reservation: Reservation.make_id(reservation.quota.pk))
    created_at = factory.LazyFunction(timezone.now)
    renewed_at = factory.LazyAttribute(lambda reservation: reservation.created_at)
    expires_at = factory.LazyAttribute(lambda reservation: reservation.created_at + timedelta(minutes=10))
