"""import_products refuses bad input: a clear message, a non-zero exit, nothing written."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from products.models import Product

HEADER = "name,price,quantity\n"
# A valid row that would change the existing product: it must not be applied
# when any other row is bad.
CHANGE_KEEP = "Keep,9.99,9\n"
NEW_ROW = "Fresh,1.00,1\n"


@pytest.fixture
def existing(db) -> Product:
    return Product.objects.create(name="Keep", price="1.00", quantity=1)


def assert_nothing_written(existing: Product) -> None:
    assert list(Product.objects.values_list("name", "price", "quantity")) == [("Keep", Decimal("1.00"), 1)]


def refuse(path: Path | str, *args: str, **options) -> tuple[str, str]:
    """Run an import that must fail; return (CommandError message, stderr)."""
    err = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("import_products", str(path), *args, stdout=io.StringIO(), stderr=err, **options)
    return str(raised.value), err.getvalue()


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# --- The file as a whole ------------------------------------------------------------


def test_missing_file_is_refused(existing, tmp_path):
    message, _ = refuse(tmp_path / "nope.csv")
    assert "no such file" in message
    assert_nothing_written(existing)


def test_directory_is_refused_as_unreadable(existing, tmp_path):
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    message, _ = refuse(folder)
    assert "is a directory" in message
    assert_nothing_written(existing)


def test_unknown_extension_needs_format(existing, tmp_path):
    message, _ = refuse(write(tmp_path, "products.txt", HEADER + CHANGE_KEEP))
    assert "cannot tell the format" in message and "--format" in message
    assert_nothing_written(existing)


def test_stdin_needs_format(existing):
    message, _ = refuse("-", stdin=io.BytesIO((HEADER + CHANGE_KEEP).encode()))
    assert "--format" in message
    assert_nothing_written(existing)


@pytest.mark.parametrize("name", ["empty.csv", "empty.json", "empty.jsonl"])
@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_empty_file_is_refused(existing, tmp_path, name, content):
    message, _ = refuse(write(tmp_path, name, content))
    assert "the file is empty" in message
    assert "Nothing was written" in message
    assert_nothing_written(existing)


@pytest.mark.parametrize(
    "name, content",
    [
        ("latin1.csv", HEADER.encode() + CHANGE_KEEP.encode() + "Café,1.00,1\n".encode("latin-1")),
        ("latin1.json", b'[{"name": "Keep", "price": "9.99"}, {"name": "Caf\xe9", "price": "1.00"}]'),
    ],
)
def test_non_utf8_file_is_refused(existing, tmp_path, name, content):
    message, _ = refuse(write(tmp_path, name, content))
    assert "not valid UTF-8" in message
    assert_nothing_written(existing)


def test_non_utf8_json_line_is_reported_with_its_line(existing, tmp_path):
    content = b'{"name": "Keep", "price": "9.99"}\n{"name": "Caf\xe9", "price": "1.00"}\n'
    message, errors = refuse(write(tmp_path, "latin1.jsonl", content))
    assert "line 2: malformed JSON: not valid UTF-8" in errors
    assert "1 invalid row(s)" in message and "nothing was written" in message
    assert_nothing_written(existing)


def test_missing_required_column_is_refused(existing, tmp_path):
    message, _ = refuse(write(tmp_path, "p.csv", "name,quantity\nKeep,9\n"))
    assert "line 1: missing required column(s): price" in message
    assert_nothing_written(existing)


def test_unknown_column_is_refused(existing, tmp_path):
    message, _ = refuse(write(tmp_path, "p.csv", "name,price,colour\nKeep,9.99,red\n"))
    assert "unknown column(s): 'colour'" in message
    assert_nothing_written(existing)


def test_broken_csv_quote_is_refused(existing, tmp_path):
    message, _ = refuse(write(tmp_path, "p.csv", HEADER + CHANGE_KEEP + '"Open,1.00,1\n'))
    assert "line 3: malformed CSV" in message
    assert_nothing_written(existing)


def test_malformed_json_array_is_refused(existing, tmp_path):
    content = '[\n{"name": "Keep", "price": "9.99"},\n{"name": "Bad" "price": 1}\n]'
    message, _ = refuse(write(tmp_path, "p.json", content))
    assert "line 3: malformed JSON" in message
    assert_nothing_written(existing)


def test_json_that_is_not_an_array_is_refused(existing, tmp_path):
    message, _ = refuse(write(tmp_path, "p.json", '{"name": "Keep", "price": "9.99"}'))
    assert "expected a JSON array" in message
    assert_nothing_written(existing)


def test_unclosed_json_array_is_refused(existing, tmp_path):
    message, _ = refuse(write(tmp_path, "p.json", '[{"name": "Keep", "price": "9.99"},'))
    assert "not closed" in message
    assert_nothing_written(existing)


# --- Bad rows: each one reported with its line, and nothing written ---------------------


@pytest.mark.parametrize(
    "row, reason",
    [
        ("Big,12345678901.00,1", "price: Price must have at most 10 digits before the decimal point"),
        ("Many,1.00,2147483648", "quantity: Quantity must be at most 2147483647"),
        ("Neg,-0.01,1", "price: Price must be greater than or equal to 0"),
        ("NegQ,1.00,-1", "quantity: Quantity must be greater than or equal to 0"),
        ("Cents,1.999,1", "price: Price must have at most 2 decimal places"),
        ("x" * 10_000 + ",1.00,1", "name: Name must be at most 200 characters (it has 10000)"),
        ("Word,ten,1", "price: Price must be a number"),
        ("Half,1.00,1.5", "quantity: Quantity must be an integer"),
        (",1.00,1", "name: Name must not be blank"),
        ("a/b,1.00,1", 'name: Name must not contain "/"'),
        ("Short,1.00", "expected 3 fields, got 2"),
        ("Keep,1.00,1", "name 'Keep' appears more than once in the file"),
    ],
    ids=[
        "price_out_of_range",
        "quantity_out_of_range",
        "negative_price",
        "negative_quantity",
        "three_decimals",
        "10000_char_name",
        "price_not_a_number",
        "quantity_not_integer",
        "blank_name",
        "slash_in_name",
        "missing_field",
        "name_twice",
    ],
)
def test_bad_csv_row_is_reported_and_nothing_written(existing, tmp_path, row, reason):
    path = write(tmp_path, "p.csv", HEADER + CHANGE_KEEP + NEW_ROW + row + "\n")
    message, errors = refuse(path)
    assert f"line 4: {reason}" in errors
    assert "1 invalid row(s)" in message and "nothing was written" in message
    assert_nothing_written(existing)


def test_every_bad_row_is_reported_with_its_line(existing, tmp_path):
    content = HEADER + "A,1.999,1\n" + CHANGE_KEEP + "B,-1,x\n" + "A,1.00,1\n" + NEW_ROW
    message, errors = refuse(write(tmp_path, "p.csv", content))
    lines = errors.strip().splitlines()
    assert lines == [
        "line 2: price: Price must have at most 2 decimal places",
        "line 4: price: Price must be greater than or equal to 0; quantity: Quantity must be an integer",
        "line 5: name 'A' appears more than once in the file",
    ]
    assert "3 invalid row(s)" in message
    assert_nothing_written(existing)


def test_name_twice_across_batches_is_found(existing, tmp_path):
    rows = "".join(f"P{i},1.00,1\n" for i in range(50)) + "P3,2.00,2\n"
    _, errors = refuse(write(tmp_path, "p.csv", HEADER + rows), "--batch-size", "7")
    assert "line 52: name 'P3' appears more than once in the file" in errors
    assert_nothing_written(existing)


def test_malformed_json_line_is_reported_and_nothing_written(existing, tmp_path):
    content = '{"name": "Keep", "price": "9.99"}\n{"name": "New", "price": 1}\n{"name": "Oops", price: 1}\n'
    message, errors = refuse(write(tmp_path, "p.jsonl", content))
    assert "line 3: malformed JSON" in errors
    assert "1 invalid row(s)" in message
    assert_nothing_written(existing)


@pytest.mark.parametrize(
    "obj, reason",
    [
        ('{"name": "X", "price": "1.00", "colour": "red"}', "unknown field(s): 'colour'"),
        ('{"name": "X"}', "missing field(s): price"),
        ('["X", "1.00"]', "expected a JSON object, got list"),
        ('{"name": "X", "price": "Infinity"}', "price: Price must be a finite number"),
        ('{"name": "X", "price": true}', "price: Price must be a number"),
        ('{"name": 7, "price": "1.00"}', "name: Name must be a string"),
        ('{"name": "X", "price": 1.005}', "price: Price must have at most 2 decimal places"),
    ],
    ids=[
        "unknown_field",
        "missing_field",
        "not_an_object",
        "infinite_price",
        "bool_price",
        "number_name",
        "three_decimals",
    ],
)
@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_bad_json_record_is_reported_and_nothing_written(existing, tmp_path, obj, reason, fmt):
    records = ['{"name": "Keep", "price": "9.99", "quantity": 9}', obj]
    content = "[\n" + ",\n".join(records) + "\n]\n" if fmt == "json" else "\n".join(records) + "\n"
    _, errors = refuse(write(tmp_path, f"p.{fmt}", content))
    line = 3 if fmt == "json" else 2  # the array's "[" has a line of its own
    assert f"line {line}: {reason}" in errors
    assert_nothing_written(existing)


def test_dry_run_reports_bad_rows_too(existing, tmp_path):
    message, errors = refuse(write(tmp_path, "p.csv", HEADER + CHANGE_KEEP + "X,1.001,1\n"), "--dry-run")
    assert "line 3: price" in errors and "1 invalid row(s)" in message
    assert_nothing_written(existing)


def test_bad_batch_size_is_refused(existing, tmp_path):
    message, _ = refuse(write(tmp_path, "p.csv", HEADER + CHANGE_KEEP), "--batch-size", "0")
    assert "--batch-size must be at least 1" in message
    assert_nothing_written(existing)


def test_unknown_format_is_refused(existing, tmp_path):
    message, _ = refuse(write(tmp_path, "p.csv", HEADER + CHANGE_KEEP), "--format", "xml")
    assert "invalid choice: 'xml'" in message
    assert_nothing_written(existing)
