"""Start each test from a healthy, empty product cache."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

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


class HeldResync:
    """The first resync after a pause, held open: :attr:`started` once it begins; it runs after :meth:`release_after`."""

    def __init__(self) -> None:
        self.started, self._finish, self._resumed = threading.Event(), threading.Event(), threading.Event()
        self._gate = threading.Lock()  # no resync in flight across the resume

    def release_after(self, seconds: float) -> None:
        threading.Timer(seconds, self._finish.set).start()

    @property
    def released(self) -> bool:
        return self._finish.is_set()


@contextmanager
def paused_then_resync_held(redis_process, monkeypatch) -> Iterator[HeldResync]:
    """Pause ``redis_process`` for the block; after the resume, hold this process's next resync open.

    A write in the block misses the paused Redis; the resync that deletes its
    old value once Redis answers (the probe's, usually) waits for
    :meth:`HeldResync.release_after`: the window a loaded machine or a slow
    round trip opens, held open so a test can read inside it.
    """
    from products import transport

    held, deliver = HeldResync(), transport._resync

    def held_resync(redis_client):
        with held._gate:
            if not held._resumed.is_set():
                deliver(redis_client)  # the paused Redis: it times out
                return
        held.started.set()
        held._finish.wait(5)
        deliver(redis_client)

    monkeypatch.setattr(transport, "_resync", held_resync)
    redis_process.pause()
    try:
        yield held
    finally:
        with held._gate:
            held._resumed.set()
            redis_process.resume()
