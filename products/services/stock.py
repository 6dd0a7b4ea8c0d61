"""Stock changes: one conditional UPDATE, never below zero or past the largest quantity."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from products import cache
from products.models import Product
from products.validators import QUANTITY_MAX


class InsufficientStock(Exception):
    """The stock change would make the quantity negative."""


class StockOverflow(Exception):
    """The stock change would exceed the largest storable quantity."""


def adjust_stock(*, name: str, delta: int) -> Product:
    """Add ``delta`` to the product's quantity in one conditional UPDATE.

    Raises Product.DoesNotExist, InsufficientStock (the quantity is unchanged)
    or StockOverflow. Invalidates the cached product after commit.
    """
    with transaction.atomic():
        # The guard lives in the WHERE clause, so concurrent changes can never
        # take the quantity below zero: the database serialises the UPDATEs
        # and each one re-checks the row it finally sees.
        changed = Product.objects.filter(
            name=name,
            quantity__gte=max(0, -delta),
            quantity__lte=QUANTITY_MAX - max(0, delta),
        ).update_without_invalidation(quantity=F("quantity") + delta, updated_at=timezone.now())
        if not changed:
            if not Product.objects.filter(name=name).exists():
                raise Product.DoesNotExist(name)
            # Only one guard can refuse a given delta. Not decided from a
            # re-read: under READ COMMITTED it may see a later change (stock
            # added since), which the refused UPDATE never judged.
            if delta < 0:
                raise InsufficientStock(name)
            raise StockOverflow(name)
        cache.invalidate_on_commit([name])
        return Product.objects.get(name=name)
