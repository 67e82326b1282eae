"""How API clients authenticate: `Authorization: Token <key>` (and, for the web page, its session)."""

import functools
from types import SimpleNamespace

from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from chatsvc import rows


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's `Authorization: Token <key>`, its user read in one cached statement (`chatsvc.rows`): every
    request of every client pays this lookup, and DRF's `select_related` query cost more CPU than the
    rest of a small request. `request.auth` is the key."""

    def authenticate(self, request):
        # DRF reads the header from `request.headers`, which first copies all of the request's headers
        # (2 % of an answer's CPU): DRF's parsing of the one header, read from META.
        authorization = request.META.get("HTTP_AUTHORIZATION", b"")
        return super().authenticate(SimpleNamespace(headers={"authorization": authorization}))

    def authenticate_credentials(self, key):
        user = rows.fetch(get_user_model(), _user_of_token(), [key])
        if user is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, key


@functools.cache
def _user_of_token() -> str:
    user_model = get_user_model()
    users, tokens = user_model._meta.db_table, Token._meta.db_table
    return (
        f"SELECT {rows.columns(user_model, users)} FROM {users} "
        f"JOIN {tokens} ON {tokens}.user_id = {users}.{user_model._meta.pk.column} WHERE {tokens}.key = %s"
    )
