"""Authentication that refuses guessing early and never sends the database what it refuses.

``LimitedModelBackend`` is Django's ModelBackend behind the failed-login
limits (products.auth_limits): it serves Basic auth and both login pages,
which all call ``authenticate()``. ``TokenAuthentication`` is DRF's, behind
the same limits, per client address (a token names no user), with the
token's user and permissions cached (products.token_cache).
"""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend
from rest_framework import authentication
from rest_framework.exceptions import AuthenticationFailed

from . import auth_limits
from .token_cache import CachedTokenAuthentication

# What a database refuses in a text parameter (PostgreSQL: NUL), or could
# never match: no such username or token exists, so refuse before querying.
_TOKEN_MAX_LENGTH = 40


def _storable(text: str) -> bool:
    return "\x00" not in text


class LimitedModelBackend(ModelBackend):
    """ModelBackend that checks the failed-login limits before hashing a password."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(self._username_field())
        if request is not None:
            auth_limits.check(request, username if isinstance(username, str) else None)
        if isinstance(username, str) and not _storable(username):
            return None  # a failed login (counted), not a database error
        return super().authenticate(request, username=username, password=password, **kwargs)

    @staticmethod
    def _username_field() -> str:
        from django.contrib.auth import get_user_model

        return get_user_model().USERNAME_FIELD


class TokenAuthentication(CachedTokenAuthentication):
    """DRF's token check behind the per-address failed-login limit, its answers cached (token_cache)."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None  # not a token request: nothing to limit
        self.check_limits(request, header)
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            auth_limits.record_failure(request, None)
            raise

    def check_limits(self, request, header: list[bytes]) -> None:
        """Raise TooManyFailedLogins when the client address is over its failed-login limit.

        The limit's count and the cached token (token_cache) come in one
        round trip; the token's entry waits for authenticate_credentials.
        """
        counts = None
        if len(header) == 2 and header[1].isascii():
            counts = self.prefetch(header[1].decode(), auth_limits.count_keys(request, None))
        auth_limits.check(request, None, counts)

    def authenticate_credentials(self, key):
        if len(key) > _TOKEN_MAX_LENGTH or not key.isascii() or not key.isprintable():
            raise AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(key)
