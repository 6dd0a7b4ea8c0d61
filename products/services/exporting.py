"""Export: stream the products as CSV, JSON or JSON Lines from one consistent snapshot."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import TextIO

from django.db import connections
from django.db.backends.sqlite3.base import SQLiteCursorWrapper
from django.db.models import F, QuerySet

from products.filewriters import (
    SQLiteLine,
    format_end,
    format_line,
    format_rows,
    join_lines,
    sqlite_lines_match,
)
from products.models import Product
from products.services import ProgressCallback
from products.validators import add_casefold_function

EXPORT_CHUNK_SIZE = 5000
# The most rows one chunk may hold: a chunk is held in memory, and past 2**31 - 1
# the databases refuse the count itself (PostgreSQL's FETCH, SQLite's LIMIT past
# 2**63 - 1), which would read as a database that is not usable.
EXPORT_MAX_CHUNK_SIZE = 1_000_000


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
    time. Rows come in primary-key order; the file imports back to the same
    names, prices and quantities, unless ``spreadsheet_safe`` (CSV) prefixed
    formula-like names with ``'``.
    """
    if queryset is None:
        queryset = Product.objects.all()
    queryset = queryset.order_by("pk")
    connection = connections[queryset.db]
    if connection.vendor == "sqlite" and sqlite_lines_match(fmt, spreadsheet_safe):
        if connection.in_atomic_block:
            # Uncommitted rows are visible only on this connection.
            chunks = _sqlite_line_chunks(queryset, fmt, chunk_size, spreadsheet_safe)
        else:
            chunks = _sqlite_joined_chunks(queryset, fmt, chunk_size, spreadsheet_safe)
    else:
        chunks = _python_chunks(queryset, fmt, chunk_size, spreadsheet_safe)
    first = True
    for text, count in chunks:
        yield text, count
        first = False
    yield format_end(fmt, wrote_rows=not first), 0


def _python_chunks(queryset: QuerySet, fmt: str, chunk_size: int, safe: bool) -> Iterator[tuple[str, int]]:
    # Let the ORM write the SQL, but skip its per-row converters: prices are
    # formatted to two places straight from what the driver returns.
    sql, params = queryset.values_list("name", "price", "quantity").query.sql_with_params()
    first = True
    cursor = connections[queryset.db].chunked_cursor()
    try:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(chunk_size):
            yield format_rows(rows, fmt, first, safe_for_spreadsheets=safe), len(rows)
            first = False
    finally:
        cursor.close()


def _one_row_sql(queryset, connection) -> str:
    """Return the SELECT of one row's exported fields by primary key (a row SQLite hands back)."""
    meta, quote = queryset.model._meta, connection.ops.quote_name
    return "SELECT {}, {}, {} FROM {} WHERE {} = %s".format(
        *(quote(meta.get_field(field).column) for field in ("name", "price", "quantity")),
        quote(meta.db_table),
        quote(meta.pk.column),
    )


def _sqlite_line_chunks(
    queryset: QuerySet, fmt: str, chunk_size: int, safe: bool
) -> Iterator[tuple[str, int]]:
    # SQLite writes each row's line (products.filewriters.SQLiteLine): one
    # string per row reaches Python. A row it hands back as its pk is read
    # and written in Python, on the same connection, so in the same snapshot.
    connection = connections[queryset.db]
    sql, params = queryset.values_list(SQLiteLine(fmt, safe=safe)).query.sql_with_params()
    row_sql = _one_row_sql(queryset, connection)
    line_of = itemgetter(0)
    first = True
    cursor = connection.chunked_cursor()
    try:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(chunk_size):
            try:
                text = join_lines(map(line_of, rows), fmt, first)
            except TypeError:  # a pk among the lines
                lines = list(map(line_of, rows))
                with connection.cursor() as single:
                    for index, line in enumerate(lines):
                        if not isinstance(line, str):
                            single.execute(row_sql, [line])
                            lines[index] = format_line(single.fetchone(), fmt, safe_for_spreadsheets=safe)
                text = join_lines(lines, fmt, first)
            yield text, len(rows)
            first = False
    finally:
        cursor.close()


def _sqlite_joined_chunks(
    queryset: QuerySet, fmt: str, chunk_size: int, safe: bool
) -> Iterator[tuple[str, int]]:
    # SQLite also joins each chunk's lines (group_concat over the chunk's rows,
    # taken in pk order by the subquery): one string per chunk reaches Python.
    # Before SQLite 3.44 (group_concat ... ORDER BY) the documentation leaves
    # that order open; SQLite feeds an aggregate a LIMIT subquery's rows in
    # its order (it cannot flatten it), and the tests and the benchmark check
    # the bytes against the Python writer.
    # The chunks are read by pk ranges, on a private connection inside one
    # deferred read transaction, so from one snapshot without taking the
    # write lock (the service's own transactions BEGIN IMMEDIATE). Used only
    # outside an atomic block: every row is then committed, and visible to
    # the private connection. A chunk with a row SQLite hands back is read
    # again row by row, that row written in Python.
    connection = connections[queryset.db]
    lines = queryset.annotate(export_pk=F("pk"), export_line=SQLiteLine(fmt, safe=safe)).values_list(
        "export_pk", "export_line"
    )
    separator = "',' || char(10)" if fmt == "json" else "char(10)"
    row_sql = _one_row_sql(queryset, connection)
    private = connection.get_new_connection(connection.get_connection_params())
    add_casefold_function(private)  # an admin search's selection filters with it
    try:
        # Django's cursor class: the ORM's SQL uses %s and %% as in Django.
        cursor = private.cursor(factory=SQLiteCursorWrapper)
        cursor.execute("BEGIN DEFERRED")
        first, last = True, None
        while True:
            chunk = (lines if last is None else lines.filter(pk__gt=last))[:chunk_size]
            sql, params = chunk.query.sql_with_params()
            cursor.execute(
                "SELECT count(*), max(export_pk), sum(typeof(export_line) = 'text'), "
                f"group_concat(export_line, {separator}) FROM ({sql})",
                params,
            )
            count, last, written, text = cursor.fetchone()
            if not count:
                break
            if written != count:  # a pk among the lines
                cursor.execute(sql, params)
                texts = []
                for _, line in cursor.fetchall():
                    if not isinstance(line, str):
                        cursor.execute(row_sql, [line])
                        line = format_line(cursor.fetchone(), fmt, safe_for_spreadsheets=safe)
                    texts.append(line)
                text = (",\n" if fmt == "json" else "\n").join(texts)
            yield join_lines([text], fmt, first), count
            first = False
    finally:
        private.close()


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
