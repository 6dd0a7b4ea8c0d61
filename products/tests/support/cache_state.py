"""Start each test from a healthy, empty product cache."""

from __future__ import annotations

from prometheus_client import REGISTRY

from products import auth_limits, counters, nearcache, outbox, serverledger, throttling
from products import cache as product_cache


def reset_process_state() -> None:
    """Forget the outages, missed invalidations and fail-open warnings this process saw."""
    product_cache.reset()
    throttling.reset()
    auth_limits.reset()
    outbox.reset()
    nearcache.reset()  # its tracked connection may lead to another test's Redis
    counters.reset()  # throttle reservations of earlier tests
    serverledger.reset()  # a transactional test's flush took the ledger's row


def fresh_product_cache() -> None:
    """Drop this run's cached products and sign-in counters, and close the breaker."""
    reset_process_state()
    try:
        product_cache.clear(sign_in_limits=True)
    except product_cache.CacheUnavailable:
        pass
    reset_process_state()


def breaker_trips() -> float:
    """Return how often this process's Redis breaker has opened (a loaded machine can make Redis miss its timeout)."""
    return REGISTRY.get_sample_value("product_cache_breaker_trips_total") or 0.0


def forget_pools(*locations: str) -> None:
    """Close and drop django-redis's pools for ``locations``.

    django-redis keeps one pool per LOCATION for the whole process, so a pool
    an earlier test built (another server on a reused port, another timeout,
    another Sentinel set under the same name) would serve this test.
    """
    from django_redis.pool import ConnectionFactory

    for location in locations:
        stale = ConnectionFactory._pools.pop(location, None)
        if stale is not None:
            stale.disconnect()
