"""The cache's key scheme on a real 3-master Redis Cluster: one slot per script, products on every master.

A throwaway cluster on free ports (own temp dir, stopped by pid); the cache's
client is a plain ``redis.cluster.RedisCluster`` here. productsite's own
cluster configuration is tested with the topology tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.core.cache import caches
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from products import cache, counters
from products.models import Product
from products.selectors import product_json

from .support.redis_topologies import DATA_PASSWORD, Cluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def cluster(monkeypatch) -> Iterator[Cluster]:
    """A fresh 3-master cluster (no replicas) that the default cache's client talks to."""
    server = Cluster(masters=3, replicas=0)
    try:
        client = RedisCluster(
            startup_nodes=[ClusterNode(*node.address) for node in server.nodes],
            password=DATA_PASSWORD,
            # Generous: building the client reads COMMAND's whole table, which
            # took over 0.2 s once on a loaded CI machine (an error at setup).
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
        )
        # Every thread's django-redis client (the probe runs in its own thread).
        monkeypatch.setattr(type(caches["default"].client), "get_client", lambda *args, **kwargs: client)
        cache.reset()
        yield server
    finally:
        cache.reset()
        server.stop()


def _product_keys_per_master(server: Cluster) -> list[int]:
    return [len(list(node.client().scan_iter(match="*:p:*", count=1000))) for node in server.nodes]


def test_products_spread_over_every_master_and_each_script_stays_in_one_slot(cluster):
    names = [f"P{i}" for i in range(120)]
    Product.objects.bulk_create(Product(name=n, price=Decimal("1.00"), quantity=1) for n in names)
    for name in names:
        assert cache.get_product(name, product_json).hit is False  # lease + fill: scripts over 3 keys
    assert all(cache.get_product(name, product_json).hit for name in names)
    per_master = _product_keys_per_master(cluster)
    print(f"\ncluster: 120 products per master {per_master}")
    assert sum(per_master) == 120 and all(count >= 20 for count in per_master)
    assert cache.info()["cached_products"] == 120

    Product.objects.filter(name="P7").update(price=Decimal("2.00"))  # invalidates by name
    fresh = cache.get_product("P7", product_json)
    assert fresh.hit is False and b'"2.00"' in fresh.data

    generation = cache.info()["generation"]
    assert cache.retire_generation() is True  # every bucket, on every master
    assert cache.info()["generation"] != generation
    assert not any(cache.get_product(name, product_json).hit for name in names[:30])

    assert cache.clear() > 0
    assert _product_keys_per_master(cluster) == [0, 0, 0]


def test_count_and_read_on_a_cluster_counts_apart_and_still_refuses(cluster):
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    answers = [
        counters.get_product_counted("Mug", "anon:1.2.3.4", 60, 3, load=product_json) for _ in range(4)
    ]
    assert [allowed for _, allowed in answers] == [True, True, True, False]
    assert answers[1][0].hit is True and answers[3][0] is None


def test_warm_up_pipelines_per_master(cluster):
    from products.selectors import products_json

    names = [f"W{i}" for i in range(60)]
    Product.objects.bulk_create(Product(name=n, price=Decimal("1.00"), quantity=1) for n in names)
    result = cache.warm_products([*names, "missing"], load_many=products_json)
    assert (result.stored, result.missing) == (60, ["missing"])
    assert all(cache.get_product(name, product_json).hit for name in names)


def test_a_restarted_master_serves_no_value_replaced_while_it_was_down(cluster):
    names = [f"R{i}" for i in range(30)]
    Product.objects.bulk_create(Product(name=n, price=Decimal("1.00"), quantity=1) for n in names)
    for name in names:
        cache.get_product(name, product_json)
    victim = cluster.nodes[0]
    victim.client().save()  # its dump holds the old values
    victim.kill()
    Product.objects.filter(name__in=names).update(price=Decimal("2.00"))  # some invalidations miss
    victim.start()
    stale = 0
    wait_for(lambda: victim.client().cluster("info")["cluster_state"] == "ok", 20, "the restarted master")
    for name in names:
        product = cache.get_product(name, product_json)
        stale += b'"2.00"' not in product.data
    assert stale == 0
