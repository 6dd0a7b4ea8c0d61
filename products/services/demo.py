"""Demo data: deterministic products for a fresh install or a screenshot ("seed")."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import AbstractContextManager

from products.fileformats import RawRow
from products.services import ProgressCallback

from .importing import IMPORT_BATCH_SIZE, ImportResult, product_bulk_import

_ADJECTIVES = ("Classic", "Compact", "Deluxe", "Everyday", "Handmade", "Rustic", "Sturdy", "Vintage")
_MATERIALS = ("Bamboo", "Ceramic", "Cotton", "Glass", "Linen", "Oak", "Steel", "Wool")
_NOUNS = ("Bowl", "Chair", "Lamp", "Mug", "Notebook", "Scarf", "Shelf", "Teapot", "Vase")


def demo_product_rows(*, count: int, seed: int = 0) -> Iterator[RawRow]:
    """Yield ``count`` demo products, the same ones for the same ``seed``."""
    rng = random.Random(seed)
    for number in range(1, count + 1):
        name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_MATERIALS)} {rng.choice(_NOUNS)} #{number}"
        cents = rng.randint(199, 49_999)
        quantity = 0 if rng.random() < 0.1 else rng.randint(1, 250)  # some out of stock
        yield RawRow(number, name, f"{cents // 100}.{cents % 100:02d}", quantity)


def seed_products(
    *,
    count: int,
    seed: int = 0,
    batch_size: int = IMPORT_BATCH_SIZE,
    on_progress: ProgressCallback | None = None,
    commit_guard: AbstractContextManager | None = None,
) -> ImportResult:
    """Upsert ``count`` deterministic demo products (through the import path)."""
    if count < 0:
        raise ValueError("count must not be negative")
    return product_bulk_import(
        rows=demo_product_rows(count=count, seed=seed),
        batch_size=batch_size,
        on_progress=on_progress,
        commit_guard=commit_guard,
    )
