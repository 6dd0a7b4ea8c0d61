"""The cache's key scheme on a real 3-master Redis Cluster: one slot per script, products on every master.

A throwaway cluster on free ports (own temp dir, stopped by pid); the cache's
client is a plain ``redis.cluster.RedisCluster`` here. productsite's own
cluster configuration is tested with the topology tests.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
import redis
from django.core.cache import caches
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from products import cache, counters
from products.models import Product
from products.selectors import product_json

from .support.processes import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _cluster_port() -> int:
    for _ in range(100):
        port = free_port()
        if port + 10000 < 65536:
            return port
    raise RuntimeError("no free port")


def _cluster_ok(port: int) -> bool:
    return redis.Redis(port=port, socket_timeout=1).execute_command("CLUSTER INFO")["cluster_state"] == "ok"


class Cluster:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="products-test-cluster-")
        self.ports = [_cluster_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen] = {}

    def start_node(self, port: int) -> None:
        options = {
            "port": port,
            "bind": "127.0.0.1",
            "cluster-enabled": "yes",
            "cluster-config-file": f"nodes-{port}.conf",
            "cluster-node-timeout": 5000,
            "dir": self.dir,
            "dbfilename": f"dump-{port}.rdb",
            "save": "",
            "appendonly": "no",
        }
        self.procs[port] = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server"]
            + [arg for name, value in options.items() for arg in (f"--{name}", str(value))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        node = redis.Redis(port=port, socket_timeout=1)
        for _ in range(200):
            try:
                node.ping()
                return
            except redis.RedisError:
                time.sleep(0.02)
        raise RuntimeError(f"cluster node on {port} did not start")

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-yes"],
            check=True,
            capture_output=True,
        )
        for _ in range(200):
            if all(_cluster_ok(port) for port in self.ports):
                return
            time.sleep(0.05)
        raise RuntimeError("the cluster did not become ready")

    def kill_node(self, port: int, save: bool = False) -> None:
        if save:
            redis.Redis(port=port).save()
        self.procs[port].kill()
        self.procs[port].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster(monkeypatch) -> Iterator[Cluster]:
    """A fresh 3-master cluster that the default cache's client talks to."""
    server = Cluster()
    try:
        server.start()
        client = RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", port) for port in server.ports],
            socket_timeout=0.2,
            socket_connect_timeout=0.2,
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
    return [len(list(redis.Redis(port=port).scan_iter(match="*:p:*", count=1000))) for port in server.ports]


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
    victim = cluster.ports[0]
    cluster.kill_node(victim, save=True)  # its dump holds the old values
    Product.objects.filter(name__in=names).update(price=Decimal("2.00"))  # some invalidations miss
    cluster.start_node(victim)
    deadline = time.monotonic() + 20
    stale = 0
    while time.monotonic() < deadline:
        try:
            if _cluster_ok(victim):
                break
        except redis.RedisError:
            pass
        time.sleep(0.1)
    for name in names:
        product = cache.get_product(name, product_json)
        stale += b'"2.00"' not in product.data
    assert stale == 0
