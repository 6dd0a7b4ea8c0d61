"""Business actions on products: plain functions that views, admin and commands share."""

from __future__ import annotations

import random
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import BinaryIO, TextIO

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connections, router, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from . import cache, validators
from .fileformats import MISSING, RawRow, RowError, format_end, format_rows, read_rows
from .models import Product
from .selectors import products_json
from .validators import QUANTITY_MAX


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
            current = Product.objects.filter(name=name).values_list("quantity", flat=True).first()
            if current is None:
                raise Product.DoesNotExist(name)
            if current + delta < 0:
                raise InsufficientStock(name)
            raise StockOverflow(name)
        cache.invalidate_on_commit([name])
        return Product.objects.get(name=name)


# --- Import -----------------------------------------------------------------------

# Rows validated, looked up and written together; one SELECT, one INSERT and
# one UPDATE statement per batch.
IMPORT_BATCH_SIZE = 2000
# Past this many changed names, retire the cache generation once instead of
# deleting every key: one Redis command, and memory stays flat.
IMPORT_INVALIDATE_BY_NAME_LIMIT = 10_000
# Names per ``IN (...)`` lookup; SQLite builds allow 999 parameters at least.
_LOOKUP_CHUNK = 900

ErrorCallback = Callable[[RowError], None]
ProgressCallback = Callable[[int], None]


class ImportFailed(Exception):
    """The import stopped for a reason other than an invalid row; nothing was written."""


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    written: bool = False  # the changes were committed

    @property
    def rows(self) -> int:
        return self.created + self.updated + self.unchanged + self.failed

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class _SeenNames:
    """The names met so far, as 64-bit hashes in one flat array.

    About 16 bytes per name (a Python set of the same hashes takes ~66), so
    a million names cost ~16 MB. Two different names share a 64-bit hash with
    probability ~n²/2^65 (3e-8 for a million rows); Python randomises the
    hash per process, so such a false "duplicate" would not repeat on a retry.
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._slots = array("q", bytes(8 * capacity))
        self._mask = capacity - 1
        self._count = 0

    def add(self, name: str) -> bool:
        """Record ``name``; return True when it was already there."""
        value = hash(name) or 1  # 0 marks a free slot
        slots, mask = self._slots, self._mask
        index = value & mask
        while True:
            current = slots[index]
            if current == 0:
                break
            if current == value:
                return True
            index = (index + 1) & mask
        slots[index] = value
        self._count += 1
        if self._count * 2 > mask:
            self._grow()
        return False

    def _grow(self) -> None:
        old = self._slots
        capacity = len(old) * 2
        self._slots = slots = array("q", bytes(8 * capacity))
        self._mask = mask = capacity - 1
        for value in old:
            if value:
                index = value & mask
                while slots[index]:
                    index = (index + 1) & mask
                slots[index] = value


def _show(name: str) -> str:
    return repr(name) if len(name) <= 60 else repr(name[:57] + "...")


def _message(exc: ValidationError) -> str:
    # Row reports join several messages with "; ", so drop their full stops.
    return " ".join(message.rstrip(".") for message in exc.messages)


class _BatchWriter:
    """Classify a batch against the database and write what changed, in bulk."""

    def __init__(self, using: str, now: datetime) -> None:
        self.using = using
        connection = connections[using]
        self.ops = connection.ops
        meta = Product._meta
        quote = connection.ops.quote_name

        def column(field: str) -> str:
            return quote(meta.get_field(field).column)

        table = quote(meta.db_table)
        # Plain INSERT/UPDATE statements sent with executemany: building a
        # model instance per row (bulk_create) costs more than validating it.
        # The table's constraints still check every row.
        self.insert_sql = (
            f"INSERT INTO {table} ({column('name')}, {column('price')}, {column('quantity')}, "
            f"{column('created_at')}, {column('updated_at')}) VALUES (%s, %s, %s, %s, %s)"
        )
        self.update_sql = (
            f"UPDATE {table} SET {column('price')} = %s, {column('quantity')} = %s, "
            f"{column('updated_at')} = %s WHERE {column('id')} = %s"
        )
        # Raw rather than filter(name__in=...): the ORM prepares every
        # parameter in Python, a tenth of the import's time.
        self.lookup_sql = (
            f"SELECT {column('id')}, {column('name')}, {column('price')}, {column('quantity')} "
            f"FROM {table} WHERE {column('name')} IN "
        )
        # Lock the rows we are about to update (PostgreSQL), so a concurrent
        # rename or delete cannot slip between this lookup and our UPDATE.
        # SQLite needs none: its IMMEDIATE transaction already excludes writers.
        self.lock_sql = " FOR UPDATE" if connection.features.has_select_for_update else ""
        self.now = self.ops.adapt_datetimefield_value(now)
        self.changed: set[str] | None = set()  # None once past the limit

    def flush(self, batch: list[tuple[str, Decimal, int | None]], result: ImportResult, write: bool) -> None:
        existing: dict[str, tuple[int, Decimal, int]] = {}
        with connections[self.using].cursor() as cursor:
            for start in range(0, len(batch), _LOOKUP_CHUNK):
                names = [row[0] for row in batch[start : start + _LOOKUP_CHUNK]]
                sql = self.lookup_sql + "(" + ", ".join(["%s"] * len(names)) + ")"
                cursor.execute(sql + self.lock_sql if write else sql, names)
                for pk, name, price, quantity in cursor.fetchall():
                    # SQLite hands back a float (or int) for the NUMERIC column;
                    # two places recover the stored decimal exactly.
                    existing[name] = (pk, Decimal(format(price, ".2f")), quantity)
        adapt = self.ops.adapt_decimalfield_value
        now = self.now
        inserts = []
        updates = []
        updated_names = []
        for name, price, quantity in batch:
            old = existing.get(name)
            if old is None:
                inserts.append((name, adapt(price, 12, 2), quantity or 0, now, now))
                continue
            pk, old_price, old_quantity = old
            if quantity is MISSING:
                quantity = old_quantity
            if price == old_price and quantity == old_quantity:
                result.unchanged += 1
            else:
                updates.append((adapt(price, 12, 2), quantity, now, pk))
                updated_names.append(name)
        result.created += len(inserts)
        result.updated += len(updates)
        if not write:
            return
        try:
            with connections[self.using].cursor() as cursor:
                if inserts:
                    cursor.executemany(self.insert_sql, inserts)
                if updates:
                    cursor.executemany(self.update_sql, updates)
        except IntegrityError as exc:
            # Validation passed, so another writer got in between (e.g. created
            # one of these names after the lookup).
            raise ImportFailed(
                f"the database refused a batch ({exc}); another process may have written "
                "the same products meanwhile: nothing was written, run the import again"
            ) from exc
        if self.changed is not None:
            self.changed.update(row[0] for row in inserts)
            self.changed.update(updated_names)
            if len(self.changed) > IMPORT_INVALIDATE_BY_NAME_LIMIT:
                self.changed = None

    def invalidate_on_commit(self) -> None:
        if self.changed is None:
            cache.retire_generation_on_commit(using=self.using)
        elif self.changed:
            cache.invalidate_on_commit(self.changed, using=self.using)


def product_bulk_import(
    *,
    rows: Iterable[RawRow | RowError],
    batch_size: int = IMPORT_BATCH_SIZE,
    dry_run: bool = False,
    on_error: ErrorCallback | None = None,
    on_progress: ProgressCallback | None = None,
    using: str | None = None,
) -> ImportResult:
    """Upsert products by name from ``rows``, all or nothing.

    Every row is checked with the API's rules (``validators.clean_*``); a name
    met twice is an error too. Each invalid row goes to ``on_error`` and the
    import carries on checking, but once one row has failed nothing more is
    written and the transaction is rolled back at the end: either every row
    is applied or none. New names are created, changed products updated,
    identical ones left alone. After commit the changed names are invalidated
    in the cache (or the whole generation retired, for large imports).
    With ``dry_run`` nothing is written and no write transaction is opened;
    the counts say what would change. ``on_progress`` receives the number of
    rows processed since its last call. Raises FileFormatError (from the reader) or ImportFailed; nothing is
    written then either.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    using = using or router.db_for_write(Product)
    result = ImportResult(dry_run=dry_run)
    started = time.perf_counter()
    seen = _SeenNames()
    clean_name, clean_price, clean_quantity = (
        validators.clean_name,
        validators.clean_price,
        validators.clean_quantity,
    )

    def fail(error: RowError) -> None:
        result.failed += 1
        if on_error is not None:
            on_error(error)

    # A dry run only reads: no write transaction, so it blocks no writer.
    with nullcontext() if dry_run else transaction.atomic(using=using):
        writer = _BatchWriter(using, timezone.now())
        batch: list[tuple[str, Decimal, int | None]] = []
        pending_progress = 0
        for item in rows:
            pending_progress += 1
            if pending_progress >= batch_size and on_progress is not None:
                on_progress(pending_progress)
                pending_progress = 0
            if type(item) is RowError:
                fail(item)
                continue
            line, name, price, quantity, position = item
            problems = []
            try:
                name = clean_name(name)
            except ValidationError as exc:
                problems.append("name: " + _message(exc))
                name = None
            try:
                price = clean_price(price)
            except ValidationError as exc:
                problems.append("price: " + _message(exc))
            if quantity is not MISSING:
                try:
                    quantity = clean_quantity(quantity)
                except ValidationError as exc:
                    problems.append("quantity: " + _message(exc))
            if name is not None and seen.add(name):
                problems.append(f"name {_show(name)} appears more than once in the file")
            if problems:
                fail(RowError(line, "; ".join(problems), position))
                continue
            batch.append((name, price, quantity))
            if len(batch) >= batch_size:
                writer.flush(batch, result, write=not (dry_run or result.failed))
                batch = []
        if batch:
            writer.flush(batch, result, write=not (dry_run or result.failed))
        if on_progress is not None and pending_progress:
            on_progress(pending_progress)
        if not dry_run and result.failed:
            transaction.set_rollback(True, using=using)
        elif not dry_run:
            writer.invalidate_on_commit()
            result.written = True
    result.seconds = time.perf_counter() - started
    return result


def product_import_file(
    *,
    stream: BinaryIO,
    fmt: str,
    batch_size: int = IMPORT_BATCH_SIZE,
    dry_run: bool = False,
    on_error: ErrorCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> ImportResult:
    """Import products from a CSV, JSON array or JSON Lines stream (see product_bulk_import)."""
    with closing(read_rows(stream, fmt)) as rows:
        return product_bulk_import(
            rows=rows,
            batch_size=batch_size,
            dry_run=dry_run,
            on_error=on_error,
            on_progress=on_progress,
        )


# --- Export -----------------------------------------------------------------------

EXPORT_CHUNK_SIZE = 5000


def product_export_chunks(
    *, fmt: str = "csv", queryset: QuerySet | None = None, chunk_size: int = EXPORT_CHUNK_SIZE
) -> Iterator[tuple[str, int]]:
    """Yield the products as text in ``fmt``, a chunk at a time, with each chunk's row count.

    Reads through one server-side cursor (PostgreSQL) or one stepped SQLite
    cursor: a single consistent snapshot, ``chunk_size`` rows in memory at a
    time. Rows come in primary-key order, the file imports back exactly.
    """
    if queryset is None:
        queryset = Product.objects.all()
    # Let the ORM write the SQL, but skip its per-row converters: prices are
    # formatted to two places straight from what the driver returns.
    sql, params = queryset.order_by("pk").values_list("name", "price", "quantity").query.sql_with_params()
    first = True
    cursor = connections[queryset.db].chunked_cursor()
    try:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(chunk_size):
            yield format_rows(rows, fmt, first), len(rows)
            first = False
    finally:
        cursor.close()
    yield format_end(fmt, wrote_rows=not first), 0


@dataclass
class ExportResult:
    rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def product_export(
    *,
    out: TextIO,
    fmt: str = "csv",
    queryset: QuerySet | None = None,
    chunk_size: int = EXPORT_CHUNK_SIZE,
    on_progress: ProgressCallback | None = None,
) -> ExportResult:
    """Write the products to ``out`` (anything with ``write(str)``) in ``fmt``."""
    started = time.perf_counter()
    total = 0
    for text, count in product_export_chunks(fmt=fmt, queryset=queryset, chunk_size=chunk_size):
        out.write(text)
        total += count
        if on_progress is not None and count:
            on_progress(count)
    return ExportResult(rows=total, seconds=time.perf_counter() - started)


# --- Cache warm-up --------------------------------------------------------------


@dataclass
class WarmResult:
    stored: int = 0  # now in the cache (stored, or already there)
    skipped: int = 0  # a reader held the fill lease: it stores the value itself
    missing: list[str] = field(default_factory=list)  # names with no product


def product_cache_warm(
    *,
    names: Iterable[str] | None = None,
    chunk_size: int = 1000,
    on_progress: ProgressCallback | None = None,
) -> WarmResult:
    """Put products into the cache: the given names, or every product when None.

    Raises cache.CacheUnavailable when Redis does not answer, before or
    during the warm-up.
    """
    if cache.status() != "ok":
        raise cache.CacheUnavailable("Redis is not answering")
    result = WarmResult()
    if names is None:
        names = Product.objects.order_by("pk").values_list("name", flat=True).iterator(chunk_size=chunk_size)
    chunk: list[str] = []

    def warm(chunk: list[str]) -> None:
        # Leases first, then one query for the batch: see cache.warm_products.
        warmed = cache.warm_products(chunk, load_many=products_json)
        result.stored += warmed.stored
        result.skipped += warmed.skipped
        result.missing.extend(warmed.missing)
        if on_progress is not None:
            on_progress(len(chunk))

    for name in names:
        chunk.append(name)
        if len(chunk) >= chunk_size:
            warm(chunk)
            chunk = []
    if chunk:
        warm(chunk)
    return result


# --- Demo data ------------------------------------------------------------------------

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
) -> ImportResult:
    """Upsert ``count`` deterministic demo products (through the import path)."""
    if count < 0:
        raise ValueError("count must not be negative")
    return product_bulk_import(
        rows=demo_product_rows(count=count, seed=seed), batch_size=batch_size, on_progress=on_progress
    )
