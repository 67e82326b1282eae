"""`manage.py sweep_streams`: clean up after streams whose server process died."""

from django.core.management.base import BaseCommand

from ai.services import streams_sweep


class Command(BaseCommand):
    help = (
        "Delete expired quota reservations and mark answers left streaming (not renewed for "
        "QUOTA_RESERVATION_TTL) as interrupted."
    )

    def handle(self, *args, **options):
        reservations, messages = streams_sweep()
        self.stdout.write(
            f"Deleted {reservations} expired reservations; marked {messages} messages interrupted."
        )
