"""Anonymous product reads through the throttle and the near cache, as the fast path makes them."""

from __future__ import annotations

import threading
from decimal import Decimal

from products import counters, nearcache
from products.selectors import product_json

from .cache_state import breaker_trips, reset_process_state

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
    for _ in range(5):
        trips = breaker_trips()
        for _ in range(reads):
            read(name)
        if breaker_trips() == trips:
            break
        # Redis missed the socket timeout on a loaded machine (a hangs_redis
        # test has production's 0.1 s) and the breaker flushed the near
        # cache: close it and warm again.
        reset_process_state()
    assert nearcache.holds(name) is not None, name


def price_of(product) -> str:
    return product.data.split(b'"price":"')[1].split(b'"')[0].decode()


def stale_reads_while_writing(
    writes: list[tuple[str, int]], floors: dict[str, int], threads: int = 3
) -> list:
    """The stale-read race: readers loop over ``floors``' names while ``writes`` update them.

    Each write is a ``QuerySet.update()`` of (name, price); once it returns,
    its price is the floor for that name. Returns every read older than the
    floor it started under (name, floor, price read): the list must be empty.
    """
    from django.db import connections

    from products.models import Product

    acknowledged = dict(floors)  # the newest price whose write has returned
    stale, stop = [], threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for name in acknowledged:
                    floor = acknowledged[name]
                    price = Decimal(price_of(read(name)))
                    if price < floor:
                        stale.append((name, floor, price))
        finally:
            connections.close_all()

    readers = [threading.Thread(target=reader) for _ in range(threads)]
    for thread in readers:
        thread.start()
    try:
        for name, price in writes:
            Product.objects.filter(name=name).update(price=Decimal(price))
            acknowledged[name] = price
    finally:
        stop.set()
        for thread in readers:
            thread.join(10)
    return stale
