"""Product files: write rows as CSV / JSON / JSON Lines (products.fileformats reads them)."""

from __future__ import annotations

import csv
import io

import orjson

from .fileformats import COLUMNS

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
        writer.writerows([(clean(name), format(price, ".2f"), quantity) for name, price, quantity in rows])
        return buffer.getvalue()
    lines = [
        orjson.dumps({"name": name, "price": format(price, ".2f"), "quantity": quantity}).decode()
        for name, price, quantity in rows
    ]
    if fmt == "jsonl":
        return "".join(line + "\n" for line in lines)
    if fmt == "json":
        return ("[\n" if first else ",\n") + ",\n".join(lines)
    raise ValueError(f"unknown format {fmt!r}")


def format_end(fmt: str, wrote_rows: bool) -> str:
    """Return what closes a file of format ``fmt`` (the JSON array's bracket)."""
    if fmt == "json":
        return "\n]\n" if wrote_rows else "[]\n"
    if fmt == "csv" and not wrote_rows:
        return ",".join(COLUMNS) + "\n"
    return ""
