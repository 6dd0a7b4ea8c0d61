"""Bulk import: upsert products by name from rows, all or nothing, with the API's rules."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, ExitStack, closing, nullcontext
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import BinaryIO

from django.core.exceptions import ValidationError
from django.db import IntegrityError, OperationalError, connections, router, transaction
from django.utils import timezone

from products import cache, validators
from products.dberrors import first_line, lost_to_another_writer
from products.fileformats import MISSING, RawRow, RowError, read_rows
from products.missed import INVALIDATE_BY_NAME_LIMIT
from products.models import Product
from products.services import ProgressCallback
from products.validators import PRICE_DECIMAL_PLACES, PRICE_FORMAT, PRICE_MAX_DIGITS

from .seen_names import SeenNames

# Rows validated, looked up and written together; one SELECT, one INSERT and
# one UPDATE statement per batch.
IMPORT_BATCH_SIZE = 2000
# Names per ``IN (...)`` lookup; SQLite builds allow 999 parameters at least.
_LOOKUP_CHUNK = 900

ErrorCallback = Callable[[RowError], None]


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


def _show(name: str) -> str:
    return repr(name) if len(name) <= 60 else repr(name[:57] + "...")


def _message(exc: ValidationError) -> str:
    # The API's and the admin's very words (products.validators), full stops included.
    return " ".join(exc.messages)


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
        # parameter in Python, a visible part of the import's time.
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
        try:
            self._flush(batch, result, write)
        except OperationalError as exc:
            if not lost_to_another_writer(exc):
                raise  # the database is down: the command says so
            # Another writer held these rows (an import of the same products
            # in another order: a deadlock; a lock held past DATABASE_LOCK_TIMEOUT).
            raise ImportFailed(
                f"the database could not lock a batch ({first_line(exc)}); another process is writing "
                "the same products: nothing was written, run the import again"
            ) from exc

    def _flush(self, batch: list[tuple[str, Decimal, int | None]], result: ImportResult, write: bool) -> None:
        existing: dict[str, tuple[int, Decimal, int]] = {}
        with connections[self.using].cursor() as cursor:
            for start in range(0, len(batch), _LOOKUP_CHUNK):
                names = [row[0] for row in batch[start : start + _LOOKUP_CHUNK]]
                sql = self.lookup_sql + "(" + ", ".join(["%s"] * len(names)) + ")"
                cursor.execute(sql + self.lock_sql if write else sql, names)
                for pk, name, price, quantity in cursor.fetchall():
                    # SQLite hands back a float (or int) for the NUMERIC column;
                    # two places recover the stored decimal exactly.
                    existing[name] = (pk, Decimal(format(price, PRICE_FORMAT)), quantity)
        adapt = self.ops.adapt_decimalfield_value
        now = self.now
        inserts = []
        updates = []
        updated_names = []
        for name, price, quantity in batch:
            old = existing.get(name)
            if old is None:
                inserts.append(
                    (
                        name,
                        adapt(price, PRICE_MAX_DIGITS, PRICE_DECIMAL_PLACES),
                        0 if quantity is MISSING else quantity,
                        now,
                        now,
                    )
                )
                continue
            pk, old_price, old_quantity = old
            if quantity is MISSING:
                quantity = old_quantity
            if price == old_price and quantity == old_quantity:
                result.unchanged += 1
            else:
                updates.append((adapt(price, PRICE_MAX_DIGITS, PRICE_DECIMAL_PLACES), quantity, now, pk))
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
                f"the database refused a batch ({first_line(exc)}); another process may have written "
                "the same products meanwhile: nothing was written, run the import again"
            ) from exc
        if self.changed is not None:
            self.changed.update(row[0] for row in inserts)
            self.changed.update(updated_names)
            # Past the limit, one retirement instead of a key per name.
            if len(self.changed) > INVALIDATE_BY_NAME_LIMIT:
                self.changed = None

    def invalidate_on_commit(self) -> None:
        if self.changed is None:
            cache.retire_generation_on_commit(using=self.using)
        elif self.changed:
            cache.invalidate_on_commit(self.changed, using=self.using)


def _clean_row(row: RawRow, seen: SeenNames) -> tuple[str, Decimal, int | None] | RowError:
    """Return the row's (name, price, quantity) by the API's rules, or the RowError saying why not.

    Every field is checked, so one message names every problem of the line;
    a quantity the file does not have stays MISSING (kept on update, 0 on create).
    """
    line, name, price, quantity, position = row
    problems = []
    try:
        name = validators.clean_name(name)
    except ValidationError as exc:
        problems.append("name: " + _message(exc))
        name = None
    try:
        price = validators.clean_price(price)
    except ValidationError as exc:
        problems.append("price: " + _message(exc))
    if quantity is not MISSING:
        try:
            quantity = validators.clean_quantity(quantity)
        except ValidationError as exc:
            problems.append("quantity: " + _message(exc))
    if name is not None and seen.add(name):
        problems.append(f"name: {_show(name)} appears more than once in the file.")
    if problems:
        return RowError(line, " ".join(problems), position)
    return name, price, quantity


def product_bulk_import(
    *,
    rows: Iterable[RawRow | RowError],
    batch_size: int = IMPORT_BATCH_SIZE,
    dry_run: bool = False,
    on_error: ErrorCallback | None = None,
    on_progress: ProgressCallback | None = None,
    using: str | None = None,
    commit_guard: AbstractContextManager | None = None,
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
    rows processed since its last call. ``commit_guard`` is entered once the
    last row is written and left after the commit and its invalidation (the
    commands hold Ctrl-C there, so the two finish together). Raises
    FileFormatError (from the reader) or ImportFailed; nothing is written then
    either.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    using = using or router.db_for_write(Product)
    result = ImportResult(dry_run=dry_run)
    started = time.perf_counter()
    seen = SeenNames()

    def fail(error: RowError) -> None:
        result.failed += 1
        if on_error is not None:
            on_error(error)

    if not dry_run:
        cache.adopt_server()  # outside the transaction below
    # A dry run only reads: no write transaction, so it blocks no writer.
    # ``after_commit`` is left after the transaction: the commit and its invalidation.
    with ExitStack() as after_commit, nullcontext() if dry_run else transaction.atomic(using=using):
        writer = _BatchWriter(using, timezone.now())
        batch: list[tuple[str, Decimal, int | None]] = []
        pending_progress = 0
        for item in rows:
            pending_progress += 1
            if pending_progress >= batch_size and on_progress is not None:
                on_progress(pending_progress)
                pending_progress = 0
            cleaned = item if type(item) is RowError else _clean_row(item, seen)
            if type(cleaned) is RowError:
                fail(cleaned)
                continue
            batch.append(cleaned)
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
            if commit_guard is not None:
                after_commit.enter_context(commit_guard)  # until the commit and its invalidation are done
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
    commit_guard: AbstractContextManager | None = None,
) -> ImportResult:
    """Import products from a CSV, JSON array or JSON Lines stream (see product_bulk_import)."""
    with closing(read_rows(stream, fmt)) as rows:
        return product_bulk_import(
            rows=rows,
            batch_size=batch_size,
            dry_run=dry_run,
            on_error=on_error,
            on_progress=on_progress,
            commit_guard=commit_guard,
        )
