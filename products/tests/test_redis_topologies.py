"""The product cache on Redis Sentinel and on Redis Cluster: the same promises as on one server.

Each test runs on both topologies (real processes from support/redis_topologies.py,
started once per session), configured exactly as settings.py configures them
from REDIS_SENTINELS / REDIS_CLUSTER_NODES. Failovers are in
test_redis_failover.py.
"""

from __future__ import annotations

import io
import json
import threading
import time
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection

from products import cache
from products.models import Product
from products.selectors import product_json

from .support.cache_state import reset_process_state
from .support.processes import manage
from .support.redis_topologies import use_topology
from .test_cache_invalidation import admin_change, admin_client, api_patch, queryset_update, read  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def keys_in(topology, settings, pattern: str = "*") -> dict[int, int]:
    """Count this run's keys (matching ``pattern`` after the prefix) on each master of the topology."""
    match = settings.CACHES["default"]["KEY_PREFIX"] + ":" + pattern
    if hasattr(topology, "keys_per_master"):
        return topology.keys_per_master(match)
    master = topology.current_master()
    return {master.port: sum(1 for _ in master.client().scan_iter(match=match, count=1000))}


@pytest.fixture(params=["sentinel", "cluster"])
def topology(request, settings):
    """The Django cache pointed at a Sentinel set or a Redis Cluster, with no product cached."""
    running = request.getfixturevalue(f"redis_{request.param}")
    use_topology(settings, running.env)
    reset_process_state()
    cache.clear()
    yield running
    reset_process_state()


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_reads_miss_then_hit_on_the_topology(topology, settings, anon_client, django_assert_num_queries):
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    first = anon_client.get("/api/products/Mug/")
    assert first.status_code == 200 and first["X-Cache"] == "MISS"
    with django_assert_num_queries(0):
        second = anon_client.get("/api/products/Mug/", HTTP_ACCEPT="application/json")
    assert second.status_code == 200 and second["X-Cache"] == "HIT"
    assert second.content == first.content
    # The product and the throttle counter live in the topology, not the shared Redis.
    assert sum(keys_in(topology, settings).values()) >= 2
    assert sum(keys_in(topology, settings, "*throttle*").values()) >= 1


WRITES = [api_patch, admin_change, queryset_update]


@pytest.mark.parametrize("write", WRITES, ids=[w.__name__ for w in WRITES])
def test_write_invalidates_on_the_topology(topology, write, editor_client, admin_client):  # noqa: F811
    product = Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    read("Mug")
    old, calls = read("Mug")
    assert old.hit and calls == 0

    write(product, editor_client, admin_client)

    fresh, calls = read("Mug")
    assert not fresh.hit and calls == 1
    assert fresh.data == product_json("Mug") != old.data
    assert read("Mug")[0].hit


def test_concurrent_misses_cost_at_most_two_queries(topology, settings):
    # As in test_cache_leases.py: long enough that a loaded machine cannot
    # delay the holder's fill past the waiters' deadline.
    settings.PRODUCT_CACHE_LEASE_WAIT = 5.0
    settings.PRODUCT_CACHE_LEASE_TIMEOUT = 10.0
    Product.objects.create(name="Hot", price=Decimal("1.00"), quantity=1)
    calls, lock, start = [], threading.Lock(), threading.Barrier(20)
    results: list = []

    def slow_load(name):
        with lock:
            calls.append(name)
        time.sleep(0.05)  # a slow database widens the race window
        return product_json(name)

    def reader():
        try:
            start.wait()
            results.append(cache.get_product("Hot", load=slow_load))
        finally:
            connection.close()

    threads = [threading.Thread(target=reader) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    print(f"\nstampede on {type(topology).__name__}: 20 concurrent misses -> {len(calls)} queries")
    assert len(calls) <= 2, f"{len(calls)} queries; cache status {cache.status()}"
    assert len(results) == 20 and all(r is not None and b'"Hot"' in r.data for r in results)


def test_cache_commands_cover_the_whole_topology(topology, settings, tmp_path):
    Product.objects.bulk_create(
        [Product(name=f"P{i:03}", price=Decimal("1.00"), quantity=i) for i in range(200)]
    )
    out = run("warm_product_cache", "--all")
    assert "200" in out, out
    info = run("product_cache_info")
    assert "Cached products:    200" in info, info
    per_master = keys_in(topology, settings, "*:p:*")  # the product values
    print(f"\nproduct values per master on {type(topology).__name__} after warming 200: {per_master}")
    assert sum(per_master.values()) == 200
    if len(per_master) > 1:  # Cluster: product keys spread over every master
        assert all(count >= 30 for count in per_master.values()), per_master
        assert "bytes, all masters)" in info, info  # the memory figure is their sum
    else:
        assert "bytes, whole server)" in info, info
    assert read("P007")[0].hit

    # The import invalidates what it changes.
    path = tmp_path / "p.csv"
    path.write_text("name,price,quantity\nP007,9.00,7\n", encoding="utf-8")
    run("import_products", str(path))
    fresh, calls = read("P007")
    assert calls == 1 and b'"9.00"' in fresh.data

    run("clear_product_cache")
    # Every master: no value, lease or counter left (the buckets' gen/srv keys stay by design).
    for pattern in ("*:p:*", "*:l:*", "*throttle*"):
        assert sum(keys_in(topology, settings, pattern).values()) == 0, pattern
    assert "Cached products:    0" in run("product_cache_info")


# Runs inside `manage.py shell` beside the served gunicorn: one process start
# instead of one per step.
_SCRIPT = """
import io, json, urllib.request
from django.core.management import call_command
from products.models import Product

def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.headers["X-Cache"], json.loads(r.read())["price"]

Product.objects.create(name="Mug", price=1, quantity=1)
seen = [get(URL), get(URL)]
Product.objects.filter(name="Mug").update(price=2)
seen.append(get(URL))
out = io.StringIO()
call_command("product_cache_info", stdout=out)
print(json.dumps({"seen": seen, "info": out.getvalue()}))
"""


def test_service_configured_from_the_environment(topology, sqlite_gunicorn):
    """gunicorn and manage.py, given only REDIS_SENTINELS / REDIS_CLUSTER_NODES, share the cache."""
    # Only the topology's variables (REDIS_URL: its credentials, or nothing).
    server = sqlite_gunicorn(workers=1, **{"REDIS_URL": "", **topology.env})
    url = server.url + "/api/products/Mug/"
    result = manage(server.env, "shell", "-c", f"URL = {url!r}\n" + _SCRIPT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # Served from the database, then from the topology; the shell's update
    # invalidated it there, so gunicorn reads the new price.
    assert report["seen"] == [["MISS", "1.00"], ["HIT", "1.00"], ["MISS", "2.00"]]
    variable = "REDIS_SENTINELS" if "REDIS_SENTINELS" in topology.env else "REDIS_CLUSTER_NODES"
    assert variable in report["info"] and "Cached products:    1" in report["info"], report["info"]
