"""manage.py product_cache_info: how many products are cached, and Redis memory."""

from __future__ import annotations

from django.core.management.base import CommandError

from products import cache, outbox, transport

from ._common import ProductCommand, redis_down_message, redis_location


class Command(ProductCommand):
    help = "Print how many products are cached now and how much memory Redis uses."
    says_redis_outage = True
    nothing_written = ""  # it only reads

    def handle(self, *args, **options) -> None:
        try:
            info = cache.info()
        except cache.CacheUnavailable as exc:
            # The outbox lives in the database: what waits for Redis is worth
            # knowing most while Redis is down.
            self._pending()
            raise CommandError(redis_down_message("cannot report on the cache", exc)) from None
        self.stdout.write(f"Redis:              {redis_location()}")
        self.stdout.write(f"Cached products:    {info['cached_products']}")
        self.stdout.write(f"Cache generation:   {info['generation']}")
        self.stdout.write(
            f"Redis memory used:  {info['used_memory_human']} ({info['used_memory']} bytes, "
            f"{'all masters' if transport.configured_for_cluster() else 'whole server'})"
        )
        self._pending()

    def _pending(self) -> None:
        count, age = outbox.pending_summary()
        waiting = f" (oldest {age:.1f} s old; the service applies them)" if count else ""
        self.stdout.write(f"Pending invalidations: {count}{waiting}")
