"""Rate limits with counters in Redis, shared by every server process.

DRF's own throttles load and save a list of timestamps per request; these use
one fixed-window counter (INCR + EXPIRE, one round trip). When Redis is down
they fail open: requests are allowed, and the outage is logged by
products.cache's circuit breaker.
"""

from __future__ import annotations

import time

from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from . import cache

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """Return (requests, window seconds) for a rate such as "100/minute"."""
    count, period = rate.split("/")
    return int(count), _PERIODS[period.strip()[0]]


class _FixedWindowThrottle(BaseThrottle):
    scope = ""

    def __init__(self) -> None:
        self._wait: float | None = None

    def ident(self, request) -> str | None:
        raise NotImplementedError

    def allow_request(self, request, view) -> bool:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        ident = self.ident(request)
        if not rate or ident is None:
            return True
        limit, window = parse_rate(rate)
        count = cache.rate_counter(f"{self.scope}:{ident}", window)
        if count is None or count <= limit:
            return True
        self._wait = window - (time.time() % window)
        return False

    def wait(self) -> float | None:
        return self._wait


class AnonRateThrottle(_FixedWindowThrottle):
    scope = "anon"

    def ident(self, request) -> str | None:
        if request.user and request.user.is_authenticated:
            return None
        return self.get_ident(request)


class UserRateThrottle(_FixedWindowThrottle):
    scope = "user"

    def ident(self, request) -> str | None:
        if request.user and request.user.is_authenticated:
            return str(request.user.pk)
        return None
