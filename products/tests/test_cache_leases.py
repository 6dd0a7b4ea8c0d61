"""Stale-proof fills and stampede control, forced deterministically."""

import json
import threading
import time
from decimal import Decimal

import pytest
from django.db import connection

from products import cache, cachekeys
from products.models import Product
from products.selectors import product_json

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_hook():
    yield
    cache.after_database_read = None


def in_thread(target, *args):
    """Run target in a thread with its own database connection."""
    result: dict = {}

    def run():
        try:
            result["value"] = target(*args)
        except BaseException as exc:  # pragma: no cover - surfaced by the test
            result["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def slow_reader_between_read_and_fill(name: str):
    """Start a reader of ``name`` that stops after its database read; return (thread, result, may_fill)."""
    has_read, may_fill = threading.Event(), threading.Event()

    def pause_between_read_and_fill(name):
        has_read.set()
        assert may_fill.wait(10)

    cache.after_database_read = pause_between_read_and_fill
    thread, result = in_thread(cache.get_product, name, product_json)
    assert has_read.wait(10)
    cache.after_database_read = None
    return thread, result, may_fill


def test_slow_reader_cannot_store_the_row_it_read_before_a_write():
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    thread, result, may_fill = slow_reader_between_read_and_fill("Mug")  # it holds the old row

    Product.objects.filter(name="Mug").update(price=Decimal("2.00"))  # commits, invalidates

    may_fill.set()  # the slow reader now tries to fill with the old row
    thread.join(10)
    assert b'"1.00"' in result["value"].data  # it answers what it read...
    calls = []
    fresh = cache.get_product("Mug", load=lambda n: calls.append(n) or product_json(n))
    assert calls == ["Mug"], "...but it must not have stored it"
    assert b'"2.00"' in fresh.data
    assert cache.get_product("Mug", product_json).hit


def fifty_concurrent_reads(name: str) -> tuple[list, list[float]]:
    """Read ``name`` from 50 threads at once through a slow loader; return (results, query start times)."""
    calls = []
    lock = threading.Lock()
    start = threading.Barrier(50)
    began = time.monotonic()

    def slow_load(name):
        with lock:
            calls.append(round(time.monotonic() - began, 3))
        time.sleep(0.05)  # a slow database widens the race window
        return product_json(name)

    def reader():
        start.wait()
        return cache.get_product(name, load=slow_load)

    threads = [in_thread(reader) for _ in range(50)]
    for thread, _ in threads:
        thread.join(20)
    return [result for _, result in threads], calls


@pytest.fixture
def lease_outlives_the_wait(settings):
    # What the stampede tests prove is that the waiters get the lease holder's
    # value, not how long they wait for it (test_dead_filler_... bounds that).
    # With the default 0.5 s, a loaded machine (49 threads polling beside the
    # holder, another process writing the SQLite file) could delay the
    # holder's fill past every waiter's deadline: each then read the database
    # (27 queries).
    settings.PRODUCT_CACHE_LEASE_WAIT = 5.0
    settings.PRODUCT_CACHE_LEASE_TIMEOUT = 10.0


def test_fifty_concurrent_misses_cost_at_most_two_queries(lease_outlives_the_wait):
    Product.objects.create(name="Hot", price=Decimal("1.00"), quantity=1)
    results, calls = fifty_concurrent_reads("Hot")
    print(f"\nstampede: 50 concurrent reads of one uncached product -> {len(calls)} database queries")
    assert len(calls) <= 2, f"queries started at {calls} s; cache status {cache.status()}"
    assert all(r["value"] is not None and b'"Hot"' in r["value"].data for r in results)


def test_fifty_concurrent_reads_of_an_unknown_name_cost_at_most_two_queries(lease_outlives_the_wait):
    # SPEC: "a burst of reads of one missing key costs the database about one
    # query", for a name no product has too (else each read is one query).
    results, calls = fifty_concurrent_reads("Nobody")
    assert all("error" not in r and r["value"] is None for r in results)
    assert len(calls) <= 2, f"{len(calls)} queries for 50 reads of an unknown name"
    reads = []
    assert cache.get_product("Nobody", load=lambda n: reads.append(n) or product_json(n)) is None
    assert reads == []  # the absence is cached
    assert cache.info()["cached_products"] == 0  # an absence is not a cached product


def test_a_slow_reader_cannot_store_an_absence_a_create_ended():
    thread, result, may_fill = slow_reader_between_read_and_fill("Mug")  # it found no product

    Product.objects.create(name="Mug", price=Decimal("2.00"), quantity=1)  # commits, invalidates

    may_fill.set()  # the slow reader now tries to store "no such product"
    thread.join(10)
    assert "error" not in result and result["value"] is None  # it answers what it read...
    fresh = cache.get_product("Mug", product_json)
    assert fresh is not None and b'"2.00"' in fresh.data, "...but it must not have stored it"


def test_dead_filler_delays_other_readers_only_briefly(settings):
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    stuck, release = threading.Event(), threading.Event()

    def hang(name):
        stuck.set()
        release.wait(10)

    cache.after_database_read = hang
    thread, _ = in_thread(cache.get_product, "Mug", product_json)  # takes the lease, then "dies"
    assert stuck.wait(10)
    cache.after_database_read = None
    try:
        began = time.monotonic()
        value = cache.get_product("Mug", product_json)
        waited = time.monotonic() - began
    finally:
        release.set()
        thread.join(10)
    assert b'"Mug"' in value.data and not value.hit
    assert waited < settings.PRODUCT_CACHE_LEASE_WAIT + 0.5


def test_unknown_names_release_their_lease():
    began = time.monotonic()
    for _ in range(20):
        assert cache.get_product("missing", product_json) is None
    # Had the lease been kept, every read after the first would wait it out.
    assert time.monotonic() - began < 2.0


def test_cached_value_is_plain_json_not_a_pickle():
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    cache.get_product("Mug", product_json)
    import django_redis

    client = django_redis.get_redis_connection("default")
    stored = client.get(cachekeys.product_keys("Mug").value)
    generation, _, data = stored.partition(b"\n")  # "<gen>\n<json>": see products.cachekeys
    assert generation and json.loads(data) == json.loads(product_json("Mug"))


def test_warm_up_cannot_store_rows_a_concurrent_write_replaced():
    from products.selectors import products_json

    Product.objects.create(name="A", price=Decimal("1.00"), quantity=1)
    Product.objects.create(name="B", price=Decimal("1.00"), quantity=1)

    def load_then_lose_the_race(names):
        rows = products_json(names)  # the old rows...
        Product.objects.filter(name="A").update(price=Decimal("2.00"))  # ...replaced meanwhile
        return rows

    result = cache.warm_products(["A", "B", "missing"], load_many=load_then_lose_the_race)
    assert result.stored == 1 and result.missing == ["missing"]
    assert b'"2.00"' in cache.get_product("A", product_json).data
    assert cache.get_product("B", product_json).hit


def test_lease_tokens_ignore_random_seed_and_differ_in_forked_workers():
    import os
    import random

    random.seed(1)
    first = cache._lease_token()
    random.seed(1)
    assert cache._lease_token() != first  # not the global generator: seeding it elsewhere changes nothing

    read, write = os.pipe()
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # a worker forked from this process, which then seeds the global generator
            random.seed(7)
            os.write(write, cache._lease_token().encode() + b"\n")
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    os.close(write)
    tokens = os.read(read, 1000).decode().split()
    os.close(read)
    assert len(tokens) == 2 and tokens[0] != tokens[1] and first not in tokens


def test_a_warm_up_sending_its_reads_again_takes_its_own_leases_again():
    # After a timeout a warm-up sends its batch again with the same token; the
    # leases its first try took must not turn its own fills into "someone
    # else is filling" (they would wait out the lease instead).
    from products import scripts, transport

    keys = list(cachekeys.product_keys("Mug"))
    client = transport.client()
    first = scripts.evalsha(client, "read", keys, ["token-1", 5000])
    again = scripts.evalsha(client, "read", keys, ["token-1", 5000])
    other = scripts.evalsha(client, "read", keys, ["token-2", 5000])
    assert (first[0], again[0], other[0]) == (2, 2, 3)
