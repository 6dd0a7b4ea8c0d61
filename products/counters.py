"""Fixed-window request counters in Redis, for products.throttling and the fast path.

One counter per client and window (``INCRBY`` + ``EXPIRE``, one round trip),
shared by every server process. Every function fails open: when Redis does
not answer, the request is allowed and counted nowhere.

:func:`take` counts in batches: a process reserves up to
``PRODUCT_THROTTLE_BATCH`` requests of a client's window at once (one INCRBY)
and allows them from memory. The window's total never exceeds the limit
(a reservation past it is cut to what is left); the cost is that a client
can be refused up to (processes - 1) x batch requests before its limit, when
other processes hold unused reservations. The batch shrinks with the limit
(limit / 100), so low limits stay exact.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings

from . import cache, cachekeys, metrics, nearcache, scripts, transport
from .cache import CachedProduct, Loader
from .transport import CacheUnavailable, Client


def window_key(counter: str, window: int) -> str:
    """Return the Redis key of the current fixed window for ``counter``."""
    return cachekeys.throttle_key(counter, int(time.time()) // window)


def rate_counter(counter: str, window: int, by: int = 1) -> int | None:
    """Count ``by`` hits in a fixed window; return the window's count, None when Redis is unavailable."""
    return _count(window_key(counter, window), window, by)


def _count(full_key: str, window: int, by: int) -> int | None:
    def op(client: Client) -> int:
        # Not "EXPIRE ... NX" (Redis 7 only): the key is named for its window,
        # so refreshing its TTL on every hit is harmless.
        commands = (("INCRBY", full_key, by), ("EXPIRE", full_key, window + 1))
        if transport.is_cluster(client):
            pipe = client.pipeline(transaction=False)
            pipe.incrby(full_key, by)
            pipe.expire(full_key, window + 1)
            return pipe.execute()[0]
        # One server: both commands in one write on a pooled connection,
        # without redis-py's pipeline object (most of a reservation's CPU).
        return scripts.pipelined(client, commands)[0]

    try:
        count = transport.run(op)
    except CacheUnavailable:
        return None
    transport.wrote()
    return count


_allowance_lock = threading.Lock()
# (counter, window, window number) -> requests this process may still allow.
# Keyed without the Redis key: building it (the cache's KEY_PREFIX and
# version) costs more than the rest of an allowed request's count.
_allowance: dict[tuple[str, int, int], int] = {}


def _batch(limit: int | None) -> int:
    size = max(1, int(settings.PRODUCT_THROTTLE_BATCH))
    return size if limit is None else max(1, min(size, limit // 100))


def take(counter: str, window: int, limit: int | None) -> bool | None:
    """Allow one request against ``counter`` if its window has room (see the module docstring).

    None: Redis did not answer, and the request is allowed (fail open).
    """
    now = int(time.time())
    slot = (counter, window, now // window)
    with _allowance_lock:
        left = _allowance.get(slot, 0)
        if left > 0:
            _allowance[slot] = left - 1
            return True
    batch = _batch(limit)
    count = _count(cachekeys.throttle_key(counter, slot[2]), window, batch)
    if count is None:
        return None
    granted = batch if limit is None else max(0, min(batch, limit - (count - batch)))
    if granted == 0:
        return False
    with _allowance_lock:
        if len(_allowance) > 4096:  # keys of past windows and clients: start afresh
            _allowance.clear()
        _allowance[slot] = _allowance.get(slot, 0) + granted - 1
    return True


def give_back(counter: str, window: int) -> None:
    """Return one request that :func:`take` allowed but that was not served after all.

    For productsite.fastcreate, which hands such a request to Django (whose
    throttle then counts it): the request counts once. It goes back to this
    process's reservation, so the window's total in Redis is unchanged; a
    request allowed while Redis was down (no reservation) has nothing to give back.
    """
    slot = (counter, window, int(time.time()) // window)
    with _allowance_lock:
        if slot in _allowance:
            _allowance[slot] += 1


def reset() -> None:
    """Forget this process's reservations (tests)."""
    with _allowance_lock:
        _allowance.clear()


def get_product_counted(
    name: str, counter: str, window: int, limit: int | None, *, load: Loader
) -> tuple[CachedProduct | None, bool]:
    """Count one request against ``counter`` and read the product.

    ``counter``/``window`` are what the throttle passes to rate_counter();
    ``limit`` is the most requests the window allows (None: count, never
    refuse). Returns ``(product, allowed)``: ``(None, False)`` when the request
    is over the limit (nothing read), else the product as cache.get_product()
    would return it. One round trip when the cache can share it
    (:func:`products.cache.count_and_read`), else a count and a read.
    """
    if nearcache.enabled():
        # A near hit needs no Redis at all: the count comes from this
        # process's reservation, the product from memory Redis keeps honest.
        if take(counter, window, limit) is False:
            return None, False
        product = nearcache.get(name)
        if product is not None:
            metrics.cache_lookup("hit")
        else:
            product = cache.get_product(name, load, reader=nearcache.read_script(name))
            if product is not None and product.hit:
                nearcache.admit(name)
        return product, True
    combined = cache.count_and_read(
        name, load, counter_key=window_key(counter, window), counter_ttl=window + 1, limit=limit
    )
    if combined is not None:
        return combined
    # The count cannot ride with the read (a Redis Cluster, the cache off):
    # a reservation taken in batches keeps most hits to the read's one round trip.
    if take(counter, window, limit) is False:
        return None, False
    return cache.get_product(name, load), True


def rate_counts(counters: list[str], window: int) -> list[int] | None:
    """Read the current fixed-window counts without counting; None when Redis is unavailable."""
    full_keys = [window_key(counter, window) for counter in counters]

    def op(client: Client) -> list[int]:
        return [int(value or 0) for value in client.mget(full_keys)]

    try:
        return transport.run(op)
    except CacheUnavailable:
        return None
