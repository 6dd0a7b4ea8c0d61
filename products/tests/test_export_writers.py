"""The export's two writers: SQLite writing each line, and Python, make the same bytes."""

from __future__ import annotations

import io
import sqlite3
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from hypothesis import example, given, settings
from hypothesis import strategies as st

from products import filewriters
from products.filewriters import format_line, sqlite_line_sql, sqlite_lines_match
from products.models import Product
from products.services import exporting

NAMES = [
    "Plain",
    "Comma, quote \" and 'apostrophe'",
    '"quoted"',
    "back\\slash",
    "Ünïcødé ☕ 茶 😀 \u2028 inside",
    "=SUM(A1)",
    "+1,2",
    "-2",
    "@x",
    "'already",
    "two  spaces",
    "A" * 200,
]
PRICES = ["0.00", "0.01", "0.10", "0.29", "12.30", "100.00", "99999999.99", "9999999999.99"]
FORMATS = [("csv", False), ("csv", True), ("json", False), ("jsonl", False)]


def export(fmt: str, safe: bool, chunk_size: int = 5) -> str:
    chunks = exporting.product_export_chunks(fmt=fmt, chunk_size=chunk_size, spreadsheet_safe=safe)
    return "".join(text for text, _ in chunks)


def python_export(monkeypatch, fmt: str, safe: bool, chunk_size: int = 5) -> str:
    with monkeypatch.context() as patch:
        patch.setattr(exporting, "sqlite_lines_match", lambda fmt, safe=False: False)
        return export(fmt, safe, chunk_size)


def create_products() -> None:
    Product.objects.bulk_create(
        Product(name=name, price=Decimal(PRICES[i % len(PRICES)]), quantity=i * 7919 % 5000)
        for i, name in enumerate(NAMES)
    )


@pytest.fixture
def products(db) -> None:
    create_products()


@pytest.mark.parametrize("fmt, safe", FORMATS)
def test_sqlite_and_python_write_the_same_bytes(products, monkeypatch, fmt, safe):
    fast = export(fmt, safe)
    assert fast == python_export(monkeypatch, fmt, safe)
    if connection.vendor == "sqlite":
        assert sqlite_lines_match(fmt, safe)  # the SQLite writer made ``fast``
    assert "9999999999.99" in fast and "12.30" in fast


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_the_sqlite_export_imports_back_exactly(products, tmp_path, fmt):
    before = set(Product.objects.values_list("name", "price", "quantity"))
    path = tmp_path / f"all.{fmt}"
    call_command("export_products", "-o", str(path), stdout=io.StringIO(), stderr=io.StringIO())
    Product.objects.all().delete()
    call_command("import_products", str(path), stdout=io.StringIO(), stderr=io.StringIO())
    assert set(Product.objects.values_list("name", "price", "quantity")) == before


def test_rows_sqlite_cannot_write_are_written_by_python(products, monkeypatch):
    """Values the model never stores but raw SQL can (SQLite types are loose) go through Python."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("UPDATE products_product SET quantity = 1.5 WHERE name = 'Plain'")
            cursor.execute("UPDATE products_product SET price = 1.005 WHERE name = '-2'")
            cursor.execute(
                "UPDATE products_product SET name = 'nul' || char(0) || 'inside' WHERE name = '@x'"
            )
    for fmt, safe in FORMATS:
        assert export(fmt, safe, chunk_size=4) == python_export(monkeypatch, fmt, safe, chunk_size=4)
    if connection.vendor == "sqlite":
        csv_text = export("csv", False)
        assert "Plain,0.00,1.5\n" in csv_text and "-2,1.00," in csv_text and "\nnul\x00inside," in csv_text


def test_a_writer_that_differs_is_not_used(monkeypatch):
    """The self-check refuses a SQLite writer that would quote differently from csv.writer."""
    real = filewriters.sqlite_line_sql

    def forgets_newlines(*args, **kwargs):
        return real(*args, **kwargs).replace("OR instr(name, char(10))", "")

    monkeypatch.setattr(filewriters, "sqlite_line_sql", forgets_newlines)
    filewriters._sqlite_lines_match.cache_clear()
    try:
        assert not sqlite_lines_match("csv")
        assert sqlite_lines_match("jsonl")
    finally:
        filewriters._sqlite_lines_match.cache_clear()


def _sqlite_line(name: str, price: str, quantity: int, fmt: str, safe: bool) -> str | int:
    database = sqlite3.connect(":memory:")
    try:
        database.execute(
            "CREATE TABLE t (id integer PRIMARY KEY, name varchar(200), price decimal, quantity integer)"
        )
        database.execute("INSERT INTO t VALUES (1, ?, ?, ?)", (name, price, quantity))
        line = sqlite_line_sql("name", "price", "quantity", "id", fmt, safe)
        return database.execute(f"SELECT {line}, name, price, quantity FROM t").fetchone()
    finally:
        database.close()


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40),
    cents=st.integers(0, 999_999_999_999),
    quantity=st.integers(0, 2_147_483_647),
    fmt_safe=st.sampled_from(FORMATS),
)
@example(name='\x00=a,"b"\n', cents=1, quantity=0, fmt_safe=("csv", True))
@example(name="\x00", cents=0, quantity=0, fmt_safe=("json", False))
def test_sqlite_writes_any_row_as_python_does(name, cents, quantity, fmt_safe):
    fmt, safe = fmt_safe
    price = f"{cents // 100}.{cents % 100:02d}"
    line, *stored = _sqlite_line(name, price, quantity, fmt, safe)
    assert line == format_line(tuple(stored), fmt, safe_for_spreadsheets=safe)


# --- Outside a transaction: SQLite joins each chunk, on a private connection -------------------


@pytest.fixture
def committed(transactional_db) -> None:
    create_products()


@pytest.mark.parametrize("fmt, safe", FORMATS)
def test_joined_chunks_write_the_same_bytes(committed, monkeypatch, fmt, safe):
    used = []
    joined = exporting._sqlite_joined_chunks
    monkeypatch.setattr(exporting, "_sqlite_joined_chunks", lambda *a: used.append(a) or joined(*a))
    fast = export(fmt, safe, chunk_size=5)
    assert fast == python_export(monkeypatch, fmt, safe, chunk_size=5)
    assert bool(used) == (connection.vendor == "sqlite")


def test_joined_chunks_read_one_snapshot(committed, monkeypatch):
    """A product written while the export runs is not in it: every chunk comes from the first read's snapshot."""
    expected = python_export(monkeypatch, "csv", False, chunk_size=5)
    chunks = exporting.product_export_chunks(fmt="csv", chunk_size=5)
    text, _ = next(chunks)
    Product.objects.filter(name="Plain").update(quantity=4321)  # in the first chunk
    Product.objects.filter(name="A" * 200).delete()  # in the last one
    Product.objects.create(name="Late", price="1.00", quantity=1)
    assert text + "".join(rest for rest, _ in chunks) == expected


def test_joined_chunks_hand_rows_back_to_python(committed, monkeypatch):
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("UPDATE products_product SET quantity = 2.5 WHERE name = 'Plain'")
            cursor.execute("UPDATE products_product SET price = 0.125 WHERE name = '-2'")
    for fmt, safe in FORMATS:
        assert export(fmt, safe, chunk_size=4) == python_export(monkeypatch, fmt, safe, chunk_size=4)
    if connection.vendor == "sqlite":
        assert "Plain,0.00,2.5\n" in export("csv", False, chunk_size=4)


def test_manage_py_check_warns_when_the_sqlite_writer_is_off(monkeypatch):
    from products.checks import EXPORT_WRITERS, export_writer_notes

    assert export_writer_notes(dict.fromkeys(EXPORT_WRITERS, True)) == []
    real = filewriters.sqlite_line_sql
    monkeypatch.setattr(
        filewriters,
        "sqlite_line_sql",
        lambda *a, **k: real(*a, **k).replace("OR instr(name, char(10))", ""),
    )
    filewriters._sqlite_lines_match.cache_clear()
    try:
        notes = export_writer_notes({key: sqlite_lines_match(*key) for key in EXPORT_WRITERS})
    finally:
        filewriters._sqlite_lines_match.cache_clear()
    assert [note.id for note in notes] == ["products.W030"]
    assert "here: csv exports use the slower Python writer" in notes[0].msg
