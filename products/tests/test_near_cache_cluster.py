"""The near cache on a real 3-master Redis Cluster: hits without Redis, never an old value.

One tracked connection per master (products.nearcache). Each test warms
products spread over every master, then changes them the ways a cluster
can: a write from this process or another client, a master killed (a
failover), a master demoted by a manual failover while it stays up, a slot
migrated to another master. The next read must never be the old value.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import redis

from products import cache, cachekeys, nearcache
from products.models import Product

from .support.cache_state import reset_process_state
from .support.near_reads import price_of, read, stale_reads_while_writing, warm
from .support.redis_topologies import DATA_PASSWORD, use_topology, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

NAMES = [f"N{i:02}" for i in range(24)]  # enough that every master holds some


@pytest.fixture
def on_cluster(redis_cluster, settings):
    use_topology(settings, redis_cluster.env)
    reset_process_state()
    cache.clear()
    Product.objects.bulk_create([Product(name=n, price=Decimal("1.00"), quantity=1) for n in NAMES])
    yield redis_cluster
    reset_process_state()


def calls(cluster, *commands: str) -> int:
    """How many times the masters ran ``commands`` (INFO commandstats)."""
    stats = [m.client().info("commandstats") for m in cluster.masters()]
    return sum(node.get(f"cmdstat_{command}", {}).get("calls", 0) for node in stats for command in commands)


def other_client(cluster) -> redis.cluster.RedisCluster:
    """Another process's view of the cluster: its own slot map and connections."""
    node = cluster.masters()[0]
    return redis.cluster.RedisCluster(host="127.0.0.1", port=node.port, password=DATA_PASSWORD)


def test_hits_are_served_from_memory_on_every_master(on_cluster):
    for name in NAMES:
        warm(name)
    # One tracked connection per master: the products are spread over all three.
    assert len(nearcache._near.trackers) == 3, nearcache._near.trackers
    # The reads run the read script by its SHA; the proofs are a tiny EVAL
    # (a script, so CLIENT PAUSE WRITE holds them as it holds a writer's DEL).
    reads, proofs = ("evalsha", "get"), ("eval",)
    before = calls(on_cluster, *reads), calls(on_cluster, *proofs)
    started = time.monotonic()
    for _ in range(10):
        for name in NAMES:
            assert read(name).hit is True
    elapsed = time.monotonic() - started
    after = calls(on_cluster, *reads), calls(on_cluster, *proofs)
    # 240 hits, no read reached Redis; at most one proof per master and PROOF_WINDOW.
    assert after[0] == before[0]
    assert after[1] - before[1] <= 3 * (elapsed / nearcache.PROOF_WINDOW + 1), (after, before, elapsed)


def test_a_write_is_never_followed_by_the_old_value(on_cluster):
    """The stale-read race through the ORM: the write invalidates after commit, on the
    product's master, settles, and the very next read in this process is the new price."""
    for price in range(2, 62):
        name = NAMES[price % len(NAMES)]
        warm(name)
        Product.objects.filter(name=name).update(price=Decimal(price))
        product = read(name)
        assert price_of(product) == f"{price}.00", (name, price, product.data)


def test_a_value_deleted_by_another_client_is_dropped_at_once(on_cluster):
    other = other_client(on_cluster)
    try:
        for round_no in range(120):
            name = NAMES[round_no % len(NAMES)]
            warm(name)
            keys = cachekeys.product_keys(name)
            other.delete(keys.value)  # as an invalidation from another process does,
            other.ping(target_nodes=other.get_node_from_key(keys.value))  # and its settling round trip
            assert read(name).hit is False, (round_no, name)
    finally:
        other.close()


def test_a_retired_generation_drops_the_buckets(on_cluster):
    for name in NAMES:
        warm(name)
    assert cache.retire_generation()  # every bucket, on every master, then settled
    assert all(read(name).hit is False for name in NAMES)


def test_threads_reading_and_a_writer_never_see_an_old_value_after_its_write(on_cluster):
    names = NAMES[:6]
    writes = [(names[price % len(names)], price) for price in range(2, 62)]
    assert stale_reads_while_writing(writes, dict.fromkeys(names, 1)) == []


def test_a_killed_master_drops_the_near_cache_and_nothing_old_is_read_after_the_failover(on_cluster):
    cluster = on_cluster
    for name in NAMES:
        warm(name)
    victim = cluster.masters()[0]
    replica = cluster.replica_of(victim)
    elsewhere = [n for n in NAMES if cluster.master_of(cachekeys.product_keys(n).gen) is not victim]
    victim.kill()
    try:
        # The writer's settling round trip reaches every master; the dead one
        # owns none of these names, so their invalidation still counts as done.
        assert cache.invalidate(elsewhere)
        # A write during the failover, touching products on every master.
        Product.objects.filter(name__in=NAMES).update(price=Decimal("2.00"))
        stale = []
        deadline = time.monotonic() + 30
        near_again = False
        while not near_again:
            assert time.monotonic() < deadline, "no failover and near hits again within 30 s"
            promoted = replica.client().info("replication")["role"] == "master"
            for name in NAMES:
                product = read(name)
                if price_of(product) != "2.00":
                    stale.append(name)
            near_again = promoted and all(nearcache.holds(name) is not None for name in NAMES)
            time.sleep(0.01)
        assert stale == []
        assert f"127.0.0.1:{victim.port}" not in nearcache._near.trackers
        assert f"127.0.0.1:{replica.port}" in nearcache._near.trackers
    finally:
        cluster.restart(victim)
    # The killed node is back, as a replica: still nothing old.
    Product.objects.filter(name__in=NAMES).update(price=Decimal("3.00"))
    assert all(price_of(read(name)) == "3.00" for name in NAMES)


def test_a_master_demoted_by_a_manual_failover_stops_serving_near_hits(on_cluster):
    """CLUSTER FAILOVER: the old master stays up as a replica, and this process's slot map
    still names it. A write on the new master must not be followed by an old read here."""
    cluster = on_cluster
    for name in NAMES:
        warm(name)
    old = cluster.master_of(cachekeys.product_keys(NAMES[0]).gen)
    new = cluster.replica_of(old)
    on_old = [n for n in NAMES if cluster.master_of(cachekeys.product_keys(n).gen) is old]
    cluster.manual_failover(new)
    wait_for(lambda: old.client().info("replication")["role"] == "slave", 30, "the old master's demotion")
    # Nothing was written yet, so no message came; past the proof window, the
    # demoted master's answer to the proof (MOVED) ends its near hits.
    time.sleep(nearcache.PROOF_WINDOW)
    assert nearcache.get(on_old[0]) is None
    assert not nearcache._near.entries and not nearcache._near.trackers
    # Another process writes to the new master (its own slot map) and settles there.
    other = other_client(cluster)
    try:
        for name in on_old:
            keys = cachekeys.product_keys(name)
            other.delete(keys.value)
            other.ping(target_nodes=other.get_node_from_key(keys.value))
    finally:
        other.close()
    Product.objects.filter(name__in=NAMES).update(price=Decimal("5.00"))
    time.sleep(nearcache.PROOF_WINDOW)
    assert all(price_of(read(name)) == "5.00" for name in NAMES)
    wait_for(
        lambda: [read(n) for n in NAMES] and all(nearcache.holds(n) is not None for n in NAMES),
        10,
        "near hits",
    )
    assert {nearcache.holds(n) for n in on_old} == {f"127.0.0.1:{new.port}"}
    cluster.wait_healthy()  # the roles stay swapped, as after a failover test


def test_a_slot_migrated_to_another_master_drops_the_near_cache(on_cluster):
    cluster = on_cluster
    name = NAMES[0]
    warm(name)
    gen_key = cachekeys.product_keys(name).gen
    source = cluster.master_of(gen_key)
    target = next(m for m in cluster.masters() if m is not source)
    slot = source.client().cluster("keyslot", gen_key)
    source_id, target_id = source.client().cluster("myid"), target.client().cluster("myid")
    target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    keys = source.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    try:
        source.client().execute_command(
            "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "AUTH", DATA_PASSWORD, "KEYS", *keys
        )
        source.client().ping()  # the settling round trip, as the service's writers make
        # The keys left the source, whose tracking said so: no near hit, before any MOVED.
        assert nearcache.get(name) is None
        assert price_of(read(name)) == "1.00"  # through ASK, from the target
        for node in cluster.masters():
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        Product.objects.filter(name=name).update(price=Decimal("7.00"))  # MOVED, then the new map
        assert price_of(read(name)) == "7.00"
        wait_for(lambda: read(name).hit and nearcache.holds(name) is not None, 10, "near hits on the target")
        assert nearcache.holds(name) == f"127.0.0.1:{target.port}"
        Product.objects.filter(name=name).update(price=Decimal("8.00"))
        assert price_of(read(name)) == "8.00"
    finally:
        # Move the slot back.
        source.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", target_id)
        target.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", source_id)
        back = target.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        if back:
            target.client().execute_command(
                "MIGRATE", "127.0.0.1", source.port, "", 0, 5000, "AUTH", DATA_PASSWORD, "KEYS", *back
            )
        for node in cluster.masters():
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", source_id)
