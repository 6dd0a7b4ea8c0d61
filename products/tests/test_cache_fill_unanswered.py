"""A miss's fill goes to Redis without waiting for its reply, and is there before the read returns.

products.scripts.run_unanswered sends ``CLIENT REPLY SKIP`` and the fill in
one write. These tests check, on real redis-server processes, that the value
is stored by the time the reader has its answer, that no reply is left on a
pooled connection for the next caller, and that a Redis refusing
``CLIENT REPLY`` (an ACL without it) gets fills that wait for their replies.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from django.core.cache import caches

from products import cache, cachekeys, transport
from products.models import Product
from products.selectors import product_json

pytestmark = pytest.mark.django_db(transaction=True)


def stored(client, name: str) -> tuple[bytes | None, int]:
    """The raw value Redis holds for ``name`` and its TTL, read on a connection of the test's own."""
    keys = cachekeys.product_keys(name)
    return client.get(keys.value), client.ttl(keys.value)


def skipped_replies(client) -> int:
    return client.info("commandstats").get("cmdstat_client|reply", {}).get("calls", 0)


def test_a_miss_is_stored_by_the_time_the_read_returns(private_redis, settings):
    names = [f"fill-{i}" for i in range(50)]
    Product.objects.bulk_create(
        Product(name=n, price=Decimal("2.50"), quantity=i) for i, n in enumerate(names)
    )
    own = private_redis.client()
    before = skipped_replies(own)

    for name in names:
        product = cache.get_product(name, product_json)
        assert product.hit is False
        value, ttl = stored(own, name)  # asked right away, on another connection
        assert value is not None and value.endswith(b"\n" + product.data)
        assert settings.PRODUCT_CACHE_TIMEOUT - 2 <= ttl <= settings.PRODUCT_CACHE_TIMEOUT

    # Each fill went unanswered, plus the pool's one question whether Redis takes CLIENT REPLY SKIP.
    assert skipped_replies(own) - before == len(names) + 1
    # No reply was left on a pooled connection: every later read gets its own.
    for name in names:
        product = cache.get_product(name, product_json)
        assert product.hit is True and f'"name":"{name}"'.encode() in product.data


def test_a_redis_refusing_client_reply_gets_fills_that_wait_for_their_replies(
    private_redis, settings, caplog
):
    admin = private_redis.client()
    admin.execute_command("ACL", "SETUSER", "default", "on", "nopass", "~*", "&*", "+@all", "-client")
    Product.objects.create(name="Plain", price=Decimal("1.00"), quantity=1)
    caches["default"].client.get_client(write=True).connection_pool.disconnect()

    with caplog.at_level(logging.WARNING, logger="products.cache"):
        first = cache.get_product("Plain", product_json)
        again = cache.get_product("Plain", product_json)

    assert (first.hit, again.hit) == (False, True)
    assert again.data == first.data
    assert stored(admin, "Plain")[0].endswith(b"\n" + first.data)
    assert transport.client().connection_pool._products_skips_replies is False
    assert "refuses CLIENT REPLY SKIP" in caplog.text
    assert skipped_replies(admin) == 0
