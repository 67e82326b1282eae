"""System checks of the quota settings."""

from django.conf import settings
from django.core import checks

from quota.periods import PERIODS


@checks.register()
def check_quota_settings(app_configs, **kwargs) -> list[checks.CheckMessage]:
    errors = []
    if settings.QUOTA_PERIOD not in PERIODS:
        errors.append(
            checks.Error(
                f"QUOTA_PERIOD is {settings.QUOTA_PERIOD!r}; it must be one of {', '.join(PERIODS)}.",
                id="quota.E001",
            )
        )
    for name in ("QUOTA_DEFAULT_REQUEST_LIMIT", "QUOTA_DEFAULT_TOKEN_LIMIT"):
        value = getattr(settings, name)
        if value is not None and (not isinstance(value, int) or value < 0):
            errors.append(checks.Error(f"{name} must be a whole number ≥ 0 or None.", id="quota.E002"))
    if settings.QUOTA_RESERVATION_TTL <= 0:
        errors.append(checks.Error("QUOTA_RESERVATION_TTL must be a positive number.", id="quota.E003"))
    return errors
