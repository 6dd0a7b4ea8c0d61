"""manage.py clear_product_cache: delete this service's product keys, nothing else."""

from __future__ import annotations

from django.core.management.base import CommandError

from products import cache

from ._common import ProductCommand, redis_down_message


class Command(ProductCommand):
    help = (
        "Delete the cached products, fill leases and request throttle counters (this "
        "service's key prefix only; never FLUSHDB: other keys in the same Redis survive). "
        "Kept: the buckets' generation and server keys, cached token checks and failed "
        "sign-in counters."
    )
    says_redis_outage = True

    def handle(self, *args, **options) -> None:
        try:
            deleted = cache.clear()
        except cache.CacheUnavailable as exc:
            raise CommandError(redis_down_message("nothing was cleared", exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Deleted {deleted} product cache key(s)."))
