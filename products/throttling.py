"""Rate limits with counters in Redis, shared by every server process.

DRF's own throttles load and save a list of timestamps per request; these
take from one fixed-window counter per client (:func:`products.counters.take`,
which reserves requests in batches, so most requests make no round trip for
their count). When Redis is down
they fail open: requests are allowed (an outage of the cache must not become
an outage of the API), and a warning says so, at most once a minute per process.
"""

from __future__ import annotations

import logging
import time

from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from . import counters
from .addresses import client_address
from .logfields import AtMostEvery

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# An outage is news once a minute per process, not once per request.
fail_open_warning = AtMostEvery(60.0)


def _log_fail_open(scope: str) -> None:
    if not fail_open_warning.due():
        return
    logger.warning(
        "throttle=fail_open scope=%s reason=redis_unavailable: requests are not rate-limited "
        "until Redis answers again",
        scope,
    )


def reset() -> None:
    """Forget when this process last logged a fail-open warning (for tests)."""
    fail_open_warning.reset()


def parse_rate(rate: str) -> tuple[int, int]:
    """Return (requests, window seconds) for a rate such as "100/minute"."""
    count, period = rate.split("/")
    return int(count), _PERIODS[period.strip()[0]]


def counter_name(scope: str, ident: str) -> str:
    """Return the counter a client's requests count against (shared with the fast path)."""
    return f"{scope}:{ident}"


class _FixedWindowThrottle(BaseThrottle):
    scope = ""

    def __init__(self) -> None:
        self._wait: float | None = None

    def ident(self, request) -> str | None:
        raise NotImplementedError

    def get_ident(self, request) -> str:
        # X-Forwarded-For only from a trusted proxy (DRF's NUM_PROXIES trusts any peer).
        return client_address(request.META)

    def allow_request(self, request, view) -> bool:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        ident = self.ident(request)
        if not rate or ident is None:
            return True
        limit, window = parse_rate(rate)
        # Counted in batches per process (products.counters.take): most
        # requests need no Redis round trip for their count.
        allowed = counters.take(counter_name(self.scope, ident), window, limit)
        if allowed is None:
            _log_fail_open(self.scope)
            return True
        if allowed:
            return True
        self._wait = window - (time.time() % window)
        return False

    def wait(self) -> float | None:
        return self._wait

    def give_back(self, request) -> None:
        """Uncount the request allow_request() just allowed (productsite.fastcreate hands it to Django)."""
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        ident = self.ident(request)
        if rate and ident is not None:
            counters.give_back(counter_name(self.scope, ident), parse_rate(rate)[1])


class AnonymousFixedWindowThrottle(_FixedWindowThrottle):
    """Count an anonymous client's requests per address in a Redis fixed window (scope "anon")."""

    scope = "anon"

    def ident(self, request) -> str | None:
        if request.user and request.user.is_authenticated:
            return None
        return self.get_ident(request)


class UserFixedWindowThrottle(_FixedWindowThrottle):
    """Count an authenticated user's requests in a Redis fixed window (scope "user")."""

    scope = "user"

    def ident(self, request) -> str | None:
        if request.user and request.user.is_authenticated:
            return str(request.user.pk)
        return None
