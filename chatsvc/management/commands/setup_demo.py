"""`manage.py setup_demo`: the local demo users and the demo token, made once and kept."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = (
        "Create the demo user (demo/demo) with an API token and an admin (admin/admin), for local use only."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", default="8000")

    def handle(self, *args, host, port, **options):
        users = get_user_model().objects
        demo = users.filter(username="demo").first() or users.create_user("demo", password="demo")
        if not users.filter(username="admin").exists():
            users.create_superuser("admin", password="admin")
        token, _ = Token.objects.get_or_create(user=demo)
        base = f"http://{host}:{port}"
        self.stdout.write(
            f"\nchatsvc is starting at {base}/  (local accounts: demo/demo, admin/admin at {base}/admin/)\n"
            f"Demo API token: {token.key}\n"
            "Watch an answer type:\n"
            f"  curl -N -H 'Authorization: Token {token.key}' -H 'Content-Type: application/json' \\\n"
            f'       -d \'{{"message": "Hello there"}}\' {base}/api/ai/chat/stream\n'
        )
