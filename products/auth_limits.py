"""Failed authentications, limited per client address and per username.

Password guessing costs the server a password hash per try (~200 ms at
Django's default strength), and DRF authenticates before its throttles run.
So every password check (Basic auth, ``/admin/login/``, ``/api-auth/login/``:
anything that calls ``django.contrib.auth.authenticate``) and every token
check first asks here whether the client address, or the username, has
failed too often in the current window; if so the request answers 429 with
``Retry-After`` before any hash is computed.

* Failures are counted in Redis (fixed windows, shared by every process):
  one counter per client address (all usernames, tokens included) and one
  per username (all addresses, so spreading guesses over many addresses
  does not help).
* Only failures count; a refused attempt costs nothing and extends nothing.
  When the window ends the counters start again, so the owner of an account
  can always sign in once the window has passed (a sustained attack on one
  username from many addresses keeps that username's password sign-in
  refused while it lasts; tokens and existing sessions still work).
* Redis down: the limits fail open (sign-in keeps working), like the
  request throttles, and say so in the log.
"""

from __future__ import annotations

import hashlib
import logging
import time

from django.conf import settings
from django.http import JsonResponse
from rest_framework.exceptions import Throttled

from . import cachekeys, counters
from .addresses import client_address
from .exceptions import html_page, is_api_path
from .logfields import AtMostEvery
from .throttling import parse_rate

logger = logging.getLogger(__name__)


class TooManyFailedLogins(Throttled):
    default_detail = "Too many failed sign-in attempts."
    extra_detail_singular = "Try again in {wait} second."
    extra_detail_plural = "Try again in {wait} seconds."
    default_code = "too_many_failed_logins"


def _limits() -> list[tuple[str, int, int]]:
    """Return (scope, limit, window seconds) for each counter, from settings."""
    return [
        ("address", *parse_rate(settings.AUTH_FAILURE_RATE_PER_ADDRESS)),
        ("username", *parse_rate(settings.AUTH_FAILURE_RATE_PER_USERNAME)),
    ]


def _counters(request, username: str | None) -> list[tuple[str, int, int]]:
    """Return (counter name, limit, window) for this request's address and username."""
    idents = {"address": client_address(request.META)}
    if username:
        # Hashed: a username may hold any character, and has no place in a key as is.
        idents["username"] = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return [
        (f"{cachekeys.SIGN_IN_COUNTERS}{scope}:{idents[scope]}", limit, window)
        for scope, limit, window in _limits()
        if scope in idents
    ]


def count_keys(request, username: str | None) -> list[str]:
    """Return the Redis keys of this request's counters (products.token_cache reads them with the token)."""
    return [counters.window_key(name, window) for name, _limit, window in _counters(request, username)]


def check(request, username: str | None, counts: list[int] | None = None) -> None:
    """Raise TooManyFailedLogins when the address or the username is over its limit.

    ``counts``: the counters' values already read, in :func:`count_keys`'
    order (None: read them here).
    """
    waits = []
    for index, (name, limit, window) in enumerate(_counters(request, username)):
        if counts is not None:
            count = counts[index]
        else:
            read = counters.rate_counts([name], window)
            if read is None:
                return  # fail open; record_failure logs it
            count = read[0]
        if count >= limit:
            waits.append(window - (time.time() % window))
    if waits:
        raise TooManyFailedLogins(wait=max(waits))


# As the request throttles: an outage is news once a minute per process, not
# once per failed sign-in (a guesser during an outage would flood the log).
_fail_open_warning = AtMostEvery(60.0)


def reset() -> None:
    """Forget when this process last logged a fail-open warning (for tests)."""
    _fail_open_warning.reset()


def record_failure(request, username: str | None) -> None:
    """Count one failed authentication against the address and the username."""
    for name, _limit, window in _counters(request, username):
        if counters.rate_counter(name, window) is None:
            if _fail_open_warning.due():
                logger.warning(
                    "auth_limits=fail_open reason=redis_unavailable: failed sign-ins are not limited "
                    "until Redis answers again"
                )
            return


def count_failed_login(sender, credentials: dict, request=None, **kwargs) -> None:
    """Receiver for ``user_login_failed``: every failed password check counts."""
    if request is None:
        return  # a shell or a command, not a client
    username = credentials.get("username")
    record_failure(request, username if isinstance(username, str) else None)


class FailedLoginLimitMiddleware:
    """Answer TooManyFailedLogins raised in a plain Django view (the login pages) with 429.

    DRF views handle it themselves (it is a DRF Throttled error).
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, TooManyFailedLogins):
            return None
        wait = int(exception.wait or 1)
        if is_api_path(request.path_info):
            response = JsonResponse({"detail": str(exception.detail)}, status=429)
        else:
            # A person reads this one: minutes past a minute and a half, and the way back.
            when = f"about {round(wait / 60)} minutes" if wait > 90 else f"{wait} second{'s' * (wait != 1)}"
            response = html_page(
                429,
                "Too many attempts",
                f"{TooManyFailedLogins.default_detail} Try again in {when}.",
                back=request.path,
                back_text="Back to the sign-in page",
            )
        response["Retry-After"] = str(wait)
        return response
