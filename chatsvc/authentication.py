"""How API clients authenticate: `Authorization: Token <key>` (and, for the web page, its session)."""

import copy
import functools
import threading
import time
from dataclasses import dataclass, field
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


REMEMBER_FOR = 60.0  # seconds a start takes a token's user as this process last read it
REMEMBER_AT_MOST = 10_000  # tokens remembered by a process (the oldest forgotten first)


class RememberingTokenAuthentication(TokenAuthentication):
    """`TokenAuthentication` for the starts of answers: a token this process read in the last
    `REMEMBER_FOR` seconds is not read again. Every start of a client paid that round trip: ~1.2 of the
    server's 8 ms to the first chunk at light load (`make bench`'s L, timed in the server). `request.auth`
    is then a `Remembered`, which the start honours (`ai.views.StartView`): the answer is written only if
    the token still holds in the statement that reserves it, and any other outcome is answered only once
    the token is read again. A deleted token or a deactivated user starts nothing and gets its 401 as
    before."""

    def authenticate_credentials(self, key):
        remembered = _remembered.get(key)
        if remembered is not None and time.monotonic() - remembered[0] < REMEMBER_FOR:
            user = copy.copy(remembered[1])  # each request its own: no request sees another's changes
            return user, Remembered(key, user.pk)
        user, key = super().authenticate_credentials(key)
        _remember(key, copy.copy(user))
        return user, key


@dataclass(frozen=True)
class Remembered:
    """The `request.auth` of a start whose token was not read: the key, and the user it named."""

    key: str = field(repr=False)  # a secret: not in a log line that shows `request.auth`
    user_id: object

    def still_valid(self) -> rows.Condition:
        """The token still names its user, an active one: the condition the start is written under."""
        return rows.Condition(_token_still_valid(), [self.key, self.user_id])

    def confirm(self) -> None:
        """Read the token again: `AuthenticationFailed` (and the token forgotten) when it no longer
        authenticates its user."""
        try:
            user, _ = TokenAuthentication().authenticate_credentials(self.key)
            if user.pk != self.user_id:
                raise exceptions.AuthenticationFailed(_("Invalid token."))
        except exceptions.AuthenticationFailed:
            with _remembering:
                _remembered.pop(self.key, None)
            raise


_remembered: dict[str, tuple[float, object]] = {}  # key: (when read, its user), oldest first
_remembering = threading.Lock()  # the start threads change it


def _remember(key: str, user) -> None:
    with _remembering:
        _remembered.pop(key, None)
        if len(_remembered) >= REMEMBER_AT_MOST:
            del _remembered[next(iter(_remembered))]
        _remembered[key] = (time.monotonic(), user)


@functools.cache
def _token_still_valid() -> str:
    users, tokens = get_user_model()._meta, Token._meta
    active = users.get_field("is_active").column
    return (
        f"EXISTS (SELECT 1 {_users_of_token()} "
        f"AND {tokens.db_table}.user_id = %s AND {users.db_table}.{active})"
    )


@functools.cache
def _user_of_token() -> str:
    user_model = get_user_model()
    return f"SELECT {rows.columns(user_model, user_model._meta.db_table)} {_users_of_token()}"


def _users_of_token() -> str:
    """`FROM … WHERE` of the user of the token `%s`."""
    users, tokens = get_user_model()._meta, Token._meta
    return (
        f"FROM {users.db_table} JOIN {tokens.db_table} ON {tokens.db_table}.user_id = "
        f"{users.db_table}.{users.pk.column} WHERE {tokens.db_table}.key = %s"
    )
