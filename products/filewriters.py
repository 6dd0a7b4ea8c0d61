"""Product files: write rows as CSV / JSON / JSON Lines (products.fileformats reads them).

Two writers make the same bytes: ``format_rows`` formats rows in Python (any
database), and ``SQLiteLine`` has SQLite write each row's whole line, so an
export of a million rows creates one Python string per row instead of a tuple,
a float, a formatted price and a pass through ``csv.writer``. The SQLite writer
is used only after ``sqlite_lines_match`` has checked, on this SQLite and this
Python, that it writes what ``format_rows`` writes.
"""

from __future__ import annotations

import csv
import functools
import io
import sqlite3
from collections.abc import Iterable

import orjson
from django.db import NotSupportedError
from django.db.models import F, Func, TextField

from .fileformats import COLUMNS
from .validators import PRICE_FORMAT, PRICE_MAX

# A spreadsheet reads a cell starting with one of these as a formula
# (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """Return ``text`` prefixed with ``'`` when a spreadsheet would run it as a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def format_rows(
    rows: list[tuple[str, object, int]], fmt: str, first: bool, *, safe_for_spreadsheets: bool = False
) -> str:
    """Return ``rows`` (name, price, quantity) as text in ``fmt``.

    ``first`` says whether these are the file's first rows (CSV header, JSON
    array opening). Prices are written with exactly two places, as strings in
    JSON, so an export imports back to the cent. ``safe_for_spreadsheets``
    (CSV only) neutralises names a spreadsheet would run as formulas; such a
    file no longer imports back exactly (the names keep their quote).
    """
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if first:
            writer.writerow(COLUMNS)
        clean = spreadsheet_safe if safe_for_spreadsheets else str
        writer.writerows(
            [(clean(name), format(price, PRICE_FORMAT), quantity) for name, price, quantity in rows]
        )
        return buffer.getvalue()
    lines = [
        orjson.dumps({"name": name, "price": format(price, PRICE_FORMAT), "quantity": quantity}).decode()
        for name, price, quantity in rows
    ]
    return join_lines(lines, fmt, first)


def join_lines(lines: Iterable[str], fmt: str, first: bool) -> str:
    """Return finished lines (one row each, no line end) as a chunk of a file in ``fmt``."""
    if fmt == "csv":
        return (",".join(COLUMNS) + "\n" if first else "") + "\n".join(lines) + "\n"
    if fmt == "jsonl":
        return "\n".join(lines) + "\n"
    if fmt == "json":
        return ("[\n" if first else ",\n") + ",\n".join(lines)
    raise ValueError(f"unknown format {fmt!r}")


def format_line(row: tuple[str, object, int], fmt: str, *, safe_for_spreadsheets: bool = False) -> str:
    """Return one row's line as ``format_rows`` writes it, without the line end."""
    text = format_rows([row], fmt, first=False, safe_for_spreadsheets=safe_for_spreadsheets)
    return text[2:] if fmt == "json" else text[:-1]


def format_end(fmt: str, wrote_rows: bool) -> str:
    """Return what closes a file of format ``fmt`` (the JSON array's bracket)."""
    if fmt == "json":
        return "\n]\n" if wrote_rows else "[]\n"
    if fmt == "csv" and not wrote_rows:
        return ",".join(COLUMNS) + "\n"
    return ""


# --- SQLite writes the lines --------------------------------------------------------------


def sqlite_line_sql(
    name: str, price: str, quantity: str, pk: str, fmt: str, safe: bool, *, percent: str = "%"
) -> str:
    """Return SQL for one row's line in ``fmt``, or the row's ``pk`` where SQLite cannot be trusted.

    The arguments are SQL for the columns. A row whose values are not what the
    model stores (a name that is not text, a price that is not a number of
    whole cents within the model's range, a quantity that is not an integer)
    gets its primary key instead of a line, and the caller formats that row in Python. ``percent`` is how the
    SQL spells printf's ``%`` (``%%`` for Django's cursors).
    """
    # SQLite's printf rounds a price halfway between two cents differently
    # from Python (1.005 is 1.00 in Python, 1.01 in SQLite): it gets only
    # prices within a thousandth of a cent of whole cents, as the model
    # stores them, far from any halfway point.
    trusted = (
        f"typeof({name}) = 'text' "
        # Text and blobs sort after every number: BETWEEN refuses them too.
        f"AND {price} BETWEEN 0 AND {PRICE_MAX} "
        f"AND abs({price} * 100 - CAST({price} * 100 + 0.5 AS INTEGER)) < 0.001 "
        f"AND typeof({quantity}) = 'integer'"
    )
    if fmt == "csv":
        cell = name
        if safe:
            starts = ", ".join(["'='", "'+'", "'-'", "'@'", "char(9)", "char(13)"])
            cell = f"(CASE WHEN substr({name}, 1, 1) IN ({starts}) THEN '''' || {name} ELSE {name} END)"
        # csv.writer's minimal quoting: a cell holding the delimiter, the quote
        # or the line end is quoted, its quotes doubled.
        quoted = (
            f"CASE WHEN instr({cell}, ',') OR instr({cell}, '\"') OR instr({cell}, char(10)) "
            f"THEN '\"' || replace({cell}, '\"', '\"\"') || '\"' ELSE {cell} END"
        )
        # || rather than printf's %s for the name: it keeps a NUL, as csv.writer does.
        line = f"{quoted} || printf(',{percent}{PRICE_FORMAT},{percent}d', {price}, {quantity})"
    elif fmt in ("json", "jsonl") and not safe:
        line = (
            f"""printf('{{"name":{percent}s,"price":"{percent}{PRICE_FORMAT}","quantity":{percent}d}}', """
            f"json_quote({name}), {price}, {quantity})"
        )
    else:
        raise ValueError(f"no SQLite line for {fmt!r}")
    return f"CASE WHEN {trusted} THEN {line} ELSE {pk} END"


class SQLiteLine(Func):
    """A product's whole line in ``fmt`` (or its pk, see ``sqlite_line_sql``), written by SQLite."""

    output_field = TextField()

    def __init__(self, fmt: str, *, safe: bool = False) -> None:
        super().__init__(F("name"), F("price"), F("quantity"), F("pk"))
        self.fmt, self.safe = fmt, safe

    def as_sql(self, compiler, connection, **extra_context):
        raise NotSupportedError("SQLiteLine is SQLite SQL")

    def as_sqlite(self, compiler, connection, **extra_context):
        columns, params = [], []
        for expression in self.get_source_expressions():
            sql, column_params = compiler.compile(expression)
            columns.append(sql)
            params.extend(column_params)
        if params:  # a column is plain SQL; each appears several times in the line
            raise NotSupportedError("SQLiteLine needs plain columns")
        return sqlite_line_sql(*columns, fmt=self.fmt, safe=self.safe, percent="%%"), params


# Values that break naive writers: every ASCII character, quotes, separators,
# formula starts, non-BMP text, NUL, prices at the edges, and rows SQLite must
# hand back to Python (a price between cents or out of range, a text price,
# a fractional quantity).
_CHECK_NAMES = [
    "Plain",
    "".join(map(chr, range(1, 128))),
    "Comma, quote \" and 'apostrophe'",
    '"',
    '""',
    ",",
    "a\nb",
    "a\rb",
    "a\r\nb",
    "\\back\\slash\\",
    " padded ",
    "Ünïcødé ☕ 茶 😀 \u2028\u2029\ufeff",
    *FORMULA_STARTS,
    *(start + 'SUM(A1),"x"' for start in FORMULA_STARTS),
    "'quoted",
    "A" * 200,
    "nul\x00inside",
]
_CHECK_PRICES = [
    "0.00", "0.01", "0.10", "0.29", "1.00", "12.30", "19.99", "100.00", "123456.78", "99999999.99",
    "1000000000.00", "9999999999.99",
]  # fmt: skip
_CHECK_BAD_PRICES = ["1.005", "0.125", "12345678901234567890.00", "not a number"]
_CHECK_QUANTITIES = [0, 1, 12, 2_147_483_647, 1.5]


def _model_valid(name: object, price: object, quantity: object) -> bool:
    """Return True when a check row holds what the model stores (SQLite must write its line)."""
    return price in _CHECK_PRICES and isinstance(quantity, int)


@functools.cache
def _sqlite_lines_match(fmt: str, safe: bool) -> bool:
    # This process's SQLite library, on a private in-memory database.
    prices = _CHECK_PRICES + _CHECK_BAD_PRICES
    rows = [
        (pk, name, prices[pk % len(prices)], _CHECK_QUANTITIES[pk % len(_CHECK_QUANTITIES)])
        for pk, name in enumerate(_CHECK_NAMES * 4, start=1)
    ]
    connection = sqlite3.connect(":memory:")
    try:
        # The table's column types, so values are stored as the product table stores them.
        connection.execute(
            "CREATE TABLE t (id integer PRIMARY KEY, name varchar(200), price decimal, quantity integer)"
        )
        connection.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
        line = sqlite_line_sql("name", "price", "quantity", "id", fmt, safe)
        got = connection.execute(f"SELECT id, {line}, name, price, quantity FROM t ORDER BY id").fetchall()
    finally:
        connection.close()
    for (pk, name, price, quantity), (_, line, stored_name, stored_price, stored_quantity) in zip(
        rows, got, strict=True
    ):
        if isinstance(line, str):
            try:
                expected = format_line(
                    (stored_name, stored_price, stored_quantity), fmt, safe_for_spreadsheets=safe
                )
            except (TypeError, ValueError):
                return False  # Python cannot write it: SQLite must hand it back
            if line != expected:
                return False
        elif line != pk or _model_valid(name, price, quantity):
            return False  # not handed back, or handed back when SQLite should write it
    return True


def sqlite_lines_match(fmt: str, safe: bool = False) -> bool:
    """Return True when ``SQLiteLine`` writes exactly what ``format_rows`` writes, on this SQLite and Python."""
    if fmt not in ("csv", "json", "jsonl") or (safe and fmt != "csv"):
        return False
    return _sqlite_lines_match(fmt, safe)
