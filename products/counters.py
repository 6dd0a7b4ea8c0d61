"""Fixed-window request counters in Redis, for products.throttling and the fast path.

One counter per client and window (``INCR`` + ``EXPIRE``, one round trip),
shared by every server process. Every function fails open: when Redis does
not answer, the request is allowed and counted nowhere.
"""

from __future__ import annotations

import time

from . import cache, cachekeys, transport
from .cache import CachedProduct, Loader
from .transport import CacheUnavailable, Client


def throttle_key(counter: str, window: int) -> str:
    """Return the Redis key of the current fixed window for ``counter``."""
    return cachekeys.key(f"throttle:{counter}:{int(time.time()) // window}")


def rate_counter(counter: str, window: int) -> int | None:
    """Count one hit in a fixed window; None when Redis is unavailable."""
    full_key = throttle_key(counter, window)

    def op(client: Client) -> int:
        pipe = client.pipeline(transaction=False)
        pipe.incr(full_key)
        # Not "EXPIRE ... NX" (Redis 7 only): the key is named for its window,
        # so refreshing its TTL on every hit is harmless.
        pipe.expire(full_key, window + 1)
        return pipe.execute()[0]

    try:
        return transport.run(op)
    except CacheUnavailable:
        return None


def get_product_counted(
    name: str, counter: str, window: int, limit: int | None, *, load: Loader
) -> tuple[CachedProduct | None, bool]:
    """Count one request against ``counter`` and read the product.

    ``counter``/``window`` are what the throttle passes to rate_counter();
    ``limit`` is the most requests the window allows (None: count, never
    refuse). Returns ``(product, allowed)``: ``(None, False)`` when the request
    is over the limit (nothing read), else the product as cache.get_product()
    would return it. One round trip when the cache can share it
    (:func:`products.cache.get_product_counted`), else a count and a read.
    """
    combined = cache.get_product_counted(
        name, load, counter_key=throttle_key(counter, window), counter_ttl=window + 1, limit=limit
    )
    if combined is not None:
        return combined
    count = rate_counter(counter, window)
    if limit is not None and count is not None and count > limit:
        return None, False
    return cache.get_product(name, load), True
