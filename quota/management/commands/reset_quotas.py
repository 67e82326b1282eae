"""`manage.py reset_quotas --all | --user NAME … [--dry-run]`: zero used counters, start a new period."""

from django.core.management.base import BaseCommand, CommandError

from quota.exceptions import UnknownUsers
from quota.services import quota_reset


class Command(BaseCommand):
    help = (
        "Set the used request and token counters of some users (or all) to zero and start a new quota "
        "period now. Reservations of streams still running are kept."
    )

    def add_arguments(self, parser):
        selector = parser.add_mutually_exclusive_group()
        selector.add_argument("--all", action="store_true", dest="all_users", help="every user")
        selector.add_argument(
            "--user", action="append", dest="usernames", metavar="NAME", help="this user (repeatable)"
        )
        parser.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")

    def handle(self, *args, all_users, usernames, dry_run, **options):
        if not (all_users or usernames):
            raise CommandError("Say whose quotas to reset: --all, or --user NAME (repeatable).", returncode=2)
        try:
            results = quota_reset(usernames=usernames, all_users=all_users, dry_run=dry_run)
        except UnknownUsers as error:
            raise CommandError(f"{error} Nothing was changed.", returncode=2) from None
        for result in results:
            self.stdout.write(result.summary(dry_run=dry_run))
