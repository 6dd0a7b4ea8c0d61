"""Start each test from a healthy, empty product cache."""

from __future__ import annotations

from products import cache as product_cache


def reset_breaker() -> None:
    """Forget any outage this process saw (tests start from a healthy cache)."""
    product_cache.reset()


def fresh_product_cache() -> None:
    """Drop this run's cached products and close the breaker."""
    reset_breaker()
    try:
        product_cache.clear()
    except product_cache.CacheUnavailable:
        pass
    reset_breaker()
