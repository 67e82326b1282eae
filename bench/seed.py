"""Create the bench user, with a token and an unlimited quota; print the token (run in the bench database)."""

import os

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsvc.settings")
    django.setup()
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from quota.models import Quota

    user = get_user_model().objects.create_user(username="bench", password=None)
    Quota.objects.create(user=user, unlimited_requests=True, unlimited_tokens=True)
    print(Token.objects.create(user=user).key)


if __name__ == "__main__":
    main()
