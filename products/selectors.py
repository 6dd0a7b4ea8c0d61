"""Read paths: what the API shows of a product, straight from the database."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import orjson

from .models import Product

REPRESENTATION_FIELDS = ("id", "name", "price", "quantity", "created_at", "updated_at")


def _timestamp(value: datetime) -> str:
    # The same text DRF's DateTimeField writes for an aware UTC datetime.
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def product_representation(
    *, id: int, name: str, price: Decimal, quantity: int, created_at: datetime, updated_at: datetime
) -> dict:
    """Return the API's dict for a product: price as a string, ISO timestamps."""
    return {
        "id": id,
        "name": name,
        "price": f"{price:.2f}",
        "quantity": quantity,
        "created_at": _timestamp(created_at),
        "updated_at": _timestamp(updated_at),
    }


def product_json(name: str) -> bytes | None:
    """Return the product's JSON representation, or None when it does not exist."""
    row = Product.objects.filter(name=name).values(*REPRESENTATION_FIELDS)[:1]
    for values in row:
        return orjson.dumps(product_representation(**values))
    return None


def products_json(names: list[str]) -> dict[str, bytes]:
    """Return {name: JSON representation} for the products that exist, in one query."""
    rows = Product.objects.filter(name__in=names).values(*REPRESENTATION_FIELDS)
    return {row["name"]: orjson.dumps(product_representation(**row)) for row in rows}
