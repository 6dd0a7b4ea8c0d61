"""Anonymous product reads through the throttle and the near cache, as the fast path makes them."""

from __future__ import annotations

from products import counters, nearcache
from products.selectors import product_json

COUNTER, WINDOW = "anon:near-test", 60


def read(name: str):
    product, allowed = counters.get_product_counted(name, COUNTER, WINDOW, None, load=product_json)
    assert allowed
    return product


def warm(name: str, reads: int = 4) -> None:
    """Read until the product is in this process's near cache.

    A miss, a Redis hit, a read through the tracked connection; on a cluster
    the first read of a master may also open its tracked connection.
    """
    for _ in range(reads):
        read(name)
    assert name in nearcache._near.entries, name
