"""manage.py warm_product_cache [--all | NAME ...]: load products into the cache."""

from __future__ import annotations

from django.core.management.base import CommandError

from products import cache
from products.models import Product
from products.services.warming import WarmUpStopped, product_cache_warm

from ._common import ProductCommand, Progress, redis_down_message


class Command(ProductCommand):
    help = "Load products into the cache ahead of reads: the named ones, or --all."
    says_redis_outage = True

    def add_arguments(self, parser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME", help="product names to warm")
        parser.add_argument("--all", action="store_true", dest="all_products", help="warm every product")

    def handle(self, *args, names: list[str], all_products: bool, **options) -> None:
        if all_products and names:
            raise CommandError("give product NAMEs or --all, not both")
        if not all_products and not names:
            raise CommandError("give the product NAMEs to warm, or --all for every product")
        total = Product.objects.count() if all_products else len(names)
        try:
            with Progress(self.stderr, total=total, unit=" products") as progress:
                result = product_cache_warm(
                    names=None if all_products else names, on_progress=progress.update
                )
        except cache.CacheUnavailable as exc:
            stored = exc.stored if isinstance(exc, WarmUpStopped) else 0
            done = f"{stored} product(s) were warmed before it stopped" if stored else "no product was warmed"
            raise CommandError(redis_down_message(done, exc)) from None
        message = f"Warmed {result.stored} product(s)"
        if result.skipped:
            message += f"; {result.skipped} skipped (a reader was filling them at that moment)"
        self.stdout.write(self.style.SUCCESS(message + "."))
        if result.missing:
            for name in result.missing:
                self.stderr.write(f"no such product: {name!r}")
            raise CommandError(f"{len(result.missing)} name(s) not found (listed above)")
