"""The per-process near cache: hits without Redis, never an old value after a write."""

from __future__ import annotations

import os
import threading
import time
from decimal import Decimal

import pytest
import redis
from django.db import connections

from products import cachekeys, nearcache
from products.models import Product

from .support.cache_state import paused_then_resync_held
from .support.near_reads import read, stale_reads_while_writing, warm

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_product_read_again_is_served_from_memory_without_redis(private_redis):
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    assert read("Mug").hit is False  # miss: database, then fill
    assert read("Mug").hit is True  # a Redis hit admits it
    assert read("Mug").hit is True  # read through the tracked connection, remembered
    before = private_redis.client().info("stats")["total_commands_processed"]
    for _ in range(20):
        assert b'"1.00"' in read("Mug").data
    after = private_redis.client().info("stats")["total_commands_processed"]
    # 20 near hits: at most a PING to prove the connection and one reservation
    # of throttle counts, plus the INFO calls themselves.
    assert after - before <= 6, after - before


def test_a_write_is_never_followed_by_the_old_value(private_redis):
    """The stale-read race: a writer (another connection, as another process would) changes
    the product and invalidates; the very next read in this process must not be the old one."""
    Product.objects.create(name="Mug", price=Decimal("0.00"), quantity=1)
    for price in range(1, 201):
        warm("Mug")
        Product.objects.filter(name="Mug").update(price=Decimal(price))  # invalidates after commit
        data = read("Mug").data
        assert f'"price":"{price}.00"'.encode() in data, (price, data)


def test_a_value_changed_in_redis_by_another_client_is_dropped_at_once(private_redis):
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    warm("Mug")
    other = private_redis.client()
    keys = cachekeys.product_keys("Mug")
    for round_no in range(200):
        other.delete(keys.value)  # as an invalidation from another process does,
        other.ping()  # and its second round trip before the write is acknowledged
        product = read("Mug")
        assert product.hit is False, round_no  # never the remembered copy
        warm("Mug")


def test_a_retired_generation_drops_the_bucket(private_redis):
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    warm("Mug")
    client = private_redis.client()
    client.set(cachekeys.product_keys("Mug").gen, "retired-by-someone-else")
    # As the service's writers do (docs/cache.md): Redis flushes the tracking
    # message before it answers a later command, so the read below must see it.
    client.ping()
    assert read("Mug").hit is False


def test_a_deleted_product_is_not_remembered_as_an_empty_one_and_comes_back_when_created(private_redis):
    # The cache stores "no such product" for a deleted name (products.cache.ABSENT);
    # the tracked connection reads it for an admitted name, and must not keep it.
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    warm("Mug")
    Product.objects.filter(name="Mug").delete()
    for _ in range(3):
        assert read("Mug") is None
    assert nearcache.holds("Mug") is None
    Product.objects.create(name="Mug", price=Decimal("2.00"), quantity=1)
    assert b'"2.00"' in read("Mug").data


@pytest.mark.hangs_redis
def test_a_hung_redis_stops_near_hits_before_a_write_could_be_acknowledged(private_redis, settings):
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    warm("Mug")
    private_redis.pause()
    try:
        # A writer gives up on a hung Redis after REDIS_SOCKET_TIMEOUT (0.1 s)
        # and only then acknowledges; by then near hits must have stopped.
        time.sleep(settings.REDIS_SOCKET_TIMEOUT)
        Product.objects.filter(name="Mug").update(price=Decimal("2.00"))
        product = read("Mug")
        assert b'"2.00"' in product.data and product.hit is False
    finally:
        private_redis.resume()


@pytest.mark.hangs_redis
def test_a_reader_slow_to_read_its_proof_does_not_stretch_the_window_past_a_hang(private_redis, settings):
    # Redis answers the near cache's proof, then hangs; the reading thread
    # gets the CPU (or the GIL) back only after a writer has given up on the
    # hung Redis and acknowledged. The window must count from when the proof
    # was sent, not from when its reply was read: counted from the reading,
    # the next read was a near hit, the old price.
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    warm("Mug")
    tracker = nearcache._near.trackers[None]
    received = tracker.connection.read_response
    acknowledged = threading.Event()

    def write() -> None:
        # Another process's writer (this process's breaker must not hear of
        # its failure): the row, then the invalidation, which times out on
        # the hung Redis; the write is then acknowledged (its outbox record
        # delivers the invalidation later).
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("UPDATE products_product SET price = 2 WHERE name = 'Mug'")
            other = redis.Redis.from_url(private_redis.url, socket_timeout=settings.REDIS_SOCKET_TIMEOUT)
            with pytest.raises(redis.TimeoutError):
                other.delete(cachekeys.product_keys("Mug").value)
            acknowledged.set()
        finally:
            connections.close_all()

    def slow_reader(*args, **kwargs):
        reply = received(*args, **kwargs)
        private_redis.pause()
        threading.Thread(target=write).start()
        assert acknowledged.wait(5)
        return reply

    time.sleep(nearcache.PROOF_WINDOW * 2)  # the next near hit proves the connection first
    tracker.connection.read_response = slow_reader
    try:
        assert nearcache.get("Mug") is not None  # began before the write: the old price is fine
        tracker.connection.read_response = received
        product = read("Mug")  # began after the write's acknowledgement
        assert b'"2.00"' in product.data and product.hit is False
    finally:
        private_redis.resume()


@pytest.mark.hangs_redis
def test_a_write_pause_stops_near_hits_as_it_holds_the_writers_delete(private_redis, settings):
    # CLIENT PAUSE WRITE (a controlled failover) holds a writer's DEL, which
    # then gives up and is acknowledged, but answered PING: the near cache's
    # proof passed and other processes served the old value for the pause.
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    warm("Mug")
    private_redis.client().client_pause(2000, all=False)  # WRITE mode
    try:
        time.sleep(nearcache.PROOF_WINDOW * 2)  # the next near hit must prove itself
        started = time.monotonic()
        assert nearcache.get("Mug") is None
        assert time.monotonic() - started < settings.REDIS_SOCKET_TIMEOUT * 3
    finally:
        private_redis.client().client_unpause()


@pytest.mark.hangs_redis
def test_a_write_this_process_could_not_invalidate_stops_its_near_hits_until_the_resync(
    private_redis, settings, monkeypatch
):
    # A write that missed a paused Redis: Redis keeps the old value, and the
    # tracked connection (idle through the pause, still open) hears nothing
    # until the resync deletes it. The near cache served the old price from
    # memory as soon as the breaker's back-off ended, resync or not.
    from products import transport

    settings.PRODUCT_CACHE_BACKOFF = 0.05
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    warm("Mug")
    with paused_then_resync_held(private_redis, monkeypatch) as resync:
        with pytest.raises(transport.CacheUnavailable):
            transport.run(lambda c: c.ping())  # the pooled connections drop: the write's DEL is never sent
        Product.objects.filter(name="Mug").update(price=Decimal("2.00"))
    assert resync.started.wait(5), "the probe did not start the resync"
    time.sleep(2 * settings.PRODUCT_CACHE_BACKOFF)  # the breaker's back-off is over
    assert nearcache.holds("Mug") is not None  # nothing has told the near cache yet
    assert nearcache.get("Mug") is None
    resync.release_after(0.2)
    product = read("Mug")  # not from Redis before the resync's delete
    assert b'"2.00"' in product.data and product.hit is False


def test_a_write_message_read_with_the_proof_drops_that_copy_only(private_redis, monkeypatch, caplog):
    # A write's message that arrives after the drain is read on the way to
    # the proof's reply: the entry is gone by then, and the proof finds no
    # value. That was taken for a dataset swapped in unannounced: every copy
    # dropped, and an INFO line (a chaos run: 333 in 11 runs of ~50 s).
    import logging

    caplog.set_level(logging.INFO, logger="products.cache")
    for name in ("Mug", "Bowl"):
        Product.objects.create(name=name, price=Decimal("1.00"), quantity=1)
        warm(name)
    time.sleep(nearcache.PROOF_WINDOW * 2)  # the next near hit proves the connection
    private_redis.client().delete(cachekeys.product_keys("Mug").value)  # as a write's invalidation
    monkeypatch.setattr(
        nearcache._Tracker, "drain", lambda tracker: None
    )  # its message comes after the drain
    assert nearcache.get("Mug") is None
    assert nearcache.holds("Bowl") is not None
    assert not any("unannounced" in r.getMessage() for r in caplog.records)


def test_a_tracked_connection_closed_while_held_is_dropped_not_reconnected_without_tracking(private_redis):
    # redis-py reconnects a closed connection by itself on the next command,
    # without CLIENT TRACKING: no message would come for a later write.
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    warm("Mug")
    nearcache._near.trackers[
        None
    ].connection.disconnect()  # as an exception other than Redis's would leave it
    time.sleep(nearcache.PROOF_WINDOW * 2)
    assert nearcache.get("Mug") is None
    assert not nearcache._near.trackers  # dropped: the next tracked read connects with tracking on
    assert b'"1.00"' in read("Mug").data
    warm("Mug")
    Product.objects.filter(name="Mug").update(price=Decimal("2.00"))
    assert b'"2.00"' in read("Mug").data


def test_a_dataset_swapped_in_under_the_connection_drops_every_copy(private_redis):
    # SWAPDB sends no invalidation, and a write's DEL then finds no key in the
    # swapped-in database, so it sends none either: the copies heard nothing.
    for name in ("Mug", "Bowl"):
        Product.objects.create(name=name, price=Decimal("1.00"), quantity=1)
        warm(name)
    private_redis.client().swapdb(0, 1)
    Product.objects.filter(name__in=["Mug", "Bowl"]).update(price=Decimal("2.00"))
    time.sleep(nearcache.PROOF_WINDOW * 2)  # the next near hit proves the connection first
    for name in ("Mug", "Bowl"):
        product = read(name)
        assert b'"2.00"' in product.data and product.hit is False, (name, product)


@pytest.mark.parametrize("denied", ["-del", "-set"])
def test_a_user_the_acl_denies_the_writers_commands_reads_no_cached_product(private_redis, denied):
    # An ACL refusing DEL (or SET) refuses every write's invalidation, which
    # then waits in the outbox, while reads went on: other processes served
    # the old price from Redis and from memory until their applier failed.
    for name in ("Mug", "Bowl"):
        Product.objects.create(name=name, price=Decimal("1.00"), quantity=1)
    warm("Mug")  # in this process's near cache
    read("Bowl")
    assert read("Bowl").hit is True  # in Redis only (not yet read through the tracked connection)
    redis_client = private_redis.client()
    redis_client.execute_command("ACL", "SETUSER", "default", denied)
    try:
        # Another process's writer: the rows, then its refused invalidation.
        with connections["default"].cursor() as cursor:
            cursor.execute("UPDATE products_product SET price = 2")
        with pytest.raises(redis.exceptions.NoPermissionError):
            if denied == "-del":
                redis_client.delete(*(cachekeys.product_keys(name).value for name in ("Mug", "Bowl")))
            else:
                redis_client.set(cachekeys.product_keys("Mug").gen, "retired")
        time.sleep(nearcache.PROOF_WINDOW * 2)  # the next near hit proves the connection first
        for name in ("Mug", "Bowl"):
            product = read(name)
            assert b'"2.00"' in product.data and product.hit is False, (name, product)
    finally:
        redis_client.execute_command("ACL", "SETUSER", "default", denied.replace("-", "+"))


def test_a_dropped_tracking_connection_flushes_everything(private_redis):
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    warm("Mug")
    client = private_redis.client()
    # Kill every other connection, the tracked one included.
    client.client_kill_filter(skipme=True)
    client.delete(cachekeys.product_keys("Mug").value)  # its invalidation message has nowhere to go
    assert read("Mug").hit is False


def test_threads_reading_and_a_writer_never_see_an_old_value_after_its_write(private_redis):
    Product.objects.create(name="Mug", price=Decimal("0.00"), quantity=1)
    writes = [("Mug", price) for price in range(1, 101)]
    assert stale_reads_while_writing(writes, {"Mug": 0}) == []


def test_off_when_the_setting_says_so(settings):
    settings.PRODUCT_NEAR_CACHE = False
    assert nearcache.read_script("Mug") is None
    assert nearcache.get("Mug") is None


def test_a_size_of_zero_is_off_and_reads_are_not_tracked(private_redis, settings):
    settings.PRODUCT_NEAR_CACHE_SIZE = 0
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    for _ in range(4):
        assert read("Mug") is not None
    assert not nearcache.enabled()
    assert nearcache.read_script("Mug") is None
    assert nearcache.holds("Mug") is None


def test_the_check_says_when_the_near_cache_is_off_or_unsafe():
    from products.checks import near_cache_notes

    assert near_cache_notes(True, True, 0.1) == []
    assert [m.id for m in near_cache_notes(False, True, 0.1)] == ["products.I001"]
    assert [m.id for m in near_cache_notes(True, False, 0.1)] == ["products.I001"]
    assert [m.msg for m in near_cache_notes(True, True, 0.1, size=0)] == [
        "The product near cache is off: PRODUCT_NEAR_CACHE_SIZE is 0."
    ]
    assert [m.id for m in near_cache_notes(True, True, 0.02)] == ["products.E003"]


def test_memory_stays_bounded_by_the_size_setting(private_redis, settings):
    settings.PRODUCT_NEAR_CACHE_SIZE = 5
    for i in range(20):
        Product.objects.create(name=f"p{i}", price=Decimal(i), quantity=1)
    for i in range(20):
        for _ in range(3):
            read(f"p{i}")
    near = nearcache._near
    assert 0 < len(near.entries) <= 5
    # Each remembered product is registered under its generation and value keys, nothing else.
    assert sum(len(names) for names in near.names_by_key.values()) == 2 * len(near.entries)


def test_a_product_read_once_is_not_tracked(private_redis):
    Product.objects.create(name="Once", price=Decimal("1.00"), quantity=1)
    read("Once")  # a miss: filled through the pool, Redis tracks nothing for it
    assert "Once" not in nearcache._near.entries and "Once" not in nearcache._near.admitted


@pytest.mark.slow
def test_sentinel_hits_are_served_from_memory_too(redis_sentinel, settings):
    # The tracked connection is the Sentinel pool's own class, which asks the
    # sentinels for the master (a plain Connection cannot take its arguments).
    from products import cache

    from .support.cache_state import reset_process_state
    from .support.redis_topologies import use_topology

    use_topology(settings, redis_sentinel.env)
    reset_process_state()
    cache.clear()
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    warm("Mug")
    Product.objects.filter(name="Mug").update(price=Decimal("2.00"))
    assert b'"2.00"' in read("Mug").data
    reset_process_state()


def test_keys_redis_stops_tracking_during_the_near_caches_own_reads_still_drop_its_copies(private_redis):
    # Redis stops tracking keys when its tracking table is full
    # (tracking-table-max-keys) or evicts them under maxmemory, and sends an
    # invalidation for each. With NOLOOP it skipped the client whose own
    # command caused that: the near cache's tracked connection, reading. Its
    # copies then heard of no later write (a review served an old price for
    # minutes, past the cache's own timeout).
    names = [f"Mug {number}" for number in range(40)]
    Product.objects.bulk_create(Product(name=name, price=Decimal("1.00"), quantity=1) for name in names)
    private_redis.client().config_set("tracking-table-max-keys", 10)
    for _ in range(3):
        for name in names:
            read(name)
    held = [name for name in names if nearcache.holds(name) is not None]
    Product.objects.filter(name__in=names).update(price=Decimal("2.00"))  # invalidates after commit
    stale = [name for name in names if b'"2.00"' not in read(name).data]
    assert not stale, f"{len(stale)} of {len(held)} near copies outlived the write"


@pytest.mark.parametrize("refusal", ["min-replicas", "misconf"])
def test_a_redis_that_refuses_writes_serves_no_reads_to_other_processes(private_redis, refusal):
    # Redis refusing writes (NOREPLICAS: min-replicas-to-write unmet; MISCONF:
    # a failed snapshot) refused the writer's DEL, so the write went to the
    # outbox, but still ran the read scripts, which write nothing on a hit:
    # other processes served the old price until their own breakers tripped
    # (a review: up to 0.38 s after the write's answer). The scripts are
    # declared as writing (a "#!lua" line), so Redis refuses them too.
    from products import missed, transport

    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    warm("Mug")
    redis = private_redis.client()
    if refusal == "min-replicas":
        redis.config_set("min-replicas-to-write", 1)
    else:
        os.mkdir(os.path.join(private_redis.dir, "dump.rdb"))  # the snapshot cannot be written
        redis.config_set("stop-writes-on-bgsave-error", "yes")
        redis.bgsave()
        deadline = time.monotonic() + 5
        while redis.info("persistence")["rdb_last_bgsave_status"] != "err":
            assert time.monotonic() < deadline, "the snapshot did not fail"
            time.sleep(0.05)
    try:
        Product.objects.filter(name="Mug").update(price=Decimal("2.00"))  # its DEL is refused
        # Now as another process that saw no failure: breaker closed, nothing
        # missed of its own, no copy in memory (its throttle reservation and
        # its checked server stay).
        transport._breaker.__init__()
        missed.pending.clear()
        nearcache.reset()
        for _ in range(3):
            assert b'"2.00"' in read("Mug").data
    finally:
        redis.config_set("min-replicas-to-write", 0)
        redis.config_set("stop-writes-on-bgsave-error", "no")
