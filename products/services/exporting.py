"""Export: stream the products as CSV, JSON or JSON Lines from one consistent snapshot."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TextIO

from django.db import connections
from django.db.models import QuerySet

from products.filewriters import format_end, format_rows
from products.models import Product

ProgressCallback = Callable[[int], None]

EXPORT_CHUNK_SIZE = 5000


def product_export_chunks(
    *,
    fmt: str = "csv",
    queryset: QuerySet | None = None,
    chunk_size: int = EXPORT_CHUNK_SIZE,
    spreadsheet_safe: bool = False,
) -> Iterator[tuple[str, int]]:
    """Yield the products as text in ``fmt``, a chunk at a time, with each chunk's row count.

    Reads through one server-side cursor (PostgreSQL) or one stepped SQLite
    cursor: a single consistent snapshot, ``chunk_size`` rows in memory at a
    time. Rows come in primary-key order, the file imports back exactly,
    unless ``spreadsheet_safe`` (CSV) prefixed formula-like names with ``'``.
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
            yield format_rows(rows, fmt, first, safe_for_spreadsheets=spreadsheet_safe), len(rows)
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
    spreadsheet_safe: bool = False,
) -> ExportResult:
    """Write the products to ``out`` (anything with ``write(str)``) in ``fmt``."""
    started = time.perf_counter()
    total = 0
    chunks = product_export_chunks(
        fmt=fmt, queryset=queryset, chunk_size=chunk_size, spreadsheet_safe=spreadsheet_safe
    )
    for text, count in chunks:
        out.write(text)
        total += count
        if on_progress is not None and count:
            on_progress(count)
    return ExportResult(rows=total, seconds=time.perf_counter() - started)
