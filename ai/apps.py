"""The `ai` app: adapters, the streaming service and its view."""

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


class AiConfig(AppConfig):
    name = "ai"

    def ready(self) -> None:
        from ai.checks import (
            adapter_setting_errors,
            check_adapters,
            check_mock_in_production,
            check_stream_settings,
        )

        checks.register(check_adapters)
        checks.register(check_stream_settings)
        checks.register(check_mock_in_production)
        # ASGI servers (daphne) run no system checks: a broken AI_ADAPTERS must still stop start-up.
        errors = adapter_setting_errors()
        if errors:
            raise ImproperlyConfigured(
                "Invalid AI adapter settings:\n"
                + "\n".join(f"  {error.msg} ({error.id})" for error in errors)
            )
