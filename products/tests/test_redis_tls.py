"""The product cache over TLS: one server, Sentinel and Redis Cluster, with a private CA.

Every server here takes TLS only and asks clients for a certificate of the
CA (Redis's default, ``tls-auth-clients yes``), so nothing connects unless
REDIS_URL's ``ssl_*`` parameters reach every connection: the data nodes',
the sentinels' and each cluster node's. The processes are this module's
own (support/redis_topologies.py), on free ports, stopped by pid.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from products import cache
from products.models import Product
from products.selectors import product_json

from .support.cache_state import reset_process_state
from .support.redis_topologies import DATA_URL_CREDENTIALS, Cluster, SentinelSet, Topology, use_topology
from .test_cache_invalidation import api_patch, read

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(scope="module")
def tls_sentinel():
    sentinels = SentinelSet(tls=True)
    # A sentinel on a plain port in front of the same TLS data nodes
    # (REDIS_SENTINEL_TLS=0): it still reaches them with TLS itself.
    sentinels.plain_sentinel = sentinels.node(sentinel_conf=sentinels.sentinel_conf, listen_tls=False)
    yield sentinels
    sentinels.stop()


@pytest.fixture(scope="module")
def tls_cluster():
    cluster = Cluster(masters=3, replicas=0, tls=True)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def tls_server():
    server = Topology("tls-server", tls=True)
    try:
        server.node()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


def one_server_env(server: Topology) -> dict[str, str]:
    port = server.nodes[0].port
    return {"REDIS_URL": f"rediss://{DATA_URL_CREDENTIALS}127.0.0.1:{port}/0{server.tls.url_query()}"}


def plain_sentinel_env(sentinels: SentinelSet) -> dict[str, str]:
    return {
        **sentinels.env,
        "REDIS_SENTINELS": f"127.0.0.1:{sentinels.plain_sentinel.port}",
        "REDIS_SENTINEL_TLS": "0",
    }


TOPOLOGIES = {
    "one server": lambda request: one_server_env(request.getfixturevalue("tls_server")),
    "sentinel": lambda request: request.getfixturevalue("tls_sentinel").env,
    "plain sentinels": lambda request: plain_sentinel_env(request.getfixturevalue("tls_sentinel")),
    "cluster": lambda request: request.getfixturevalue("tls_cluster").env,
}


@pytest.fixture(params=list(TOPOLOGIES))
def tls_env(request, settings):
    """The Django cache pointed at a TLS topology, with no product cached."""
    env = TOPOLOGIES[request.param](request)
    use_topology(settings, env)
    reset_process_state()
    cache.clear()
    yield env
    reset_process_state()


def test_reads_are_cached_and_writes_invalidate_over_tls(tls_env, editor_client, django_assert_num_queries):
    assert "ssl_certfile=" in tls_env["REDIS_URL"]
    product = Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    first, calls = read("Mug")
    assert not first.hit and calls == 1, cache.status()
    with django_assert_num_queries(0):
        second, calls = read("Mug")
    assert second.hit and calls == 0

    api_patch(product, editor_client, None)

    fresh, calls = read("Mug")
    assert not fresh.hit and calls == 1
    assert fresh.data == product_json("Mug") != second.data
    assert read("Mug")[0].hit


def test_a_sentinel_that_refuses_the_handshake_is_named_in_the_warning(tls_sentinel, settings, caplog):
    # The client trusts another CA: the sentinels' certificates fail to verify.
    env = {**tls_sentinel.env}
    env["REDIS_URL"] = env["REDIS_URL"].split("?")[0] + tls_sentinel.tls.url_query(
        ca=tls_sentinel.tls.other_ca
    )
    use_topology(settings, env)
    reset_process_state()
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    with caplog.at_level(logging.WARNING, logger="products.cache"):
        product, calls = read("Mug")
    reset_process_state()
    assert product is not None and not product.hit and calls == 1  # served from the database
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert "No master found" in warning, warning
    assert "the first sentinel failed with" in warning and "CERTIFICATE_VERIFY_FAILED" in warning, warning
