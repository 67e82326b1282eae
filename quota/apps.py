"""The quota app: per-user request and token quotas, enforced exactly with reservations."""

from django.apps import AppConfig


class QuotaConfig(AppConfig):
    name = "quota"

    def ready(self):
        from quota import checks  # noqa: F401  (registers the settings checks)
