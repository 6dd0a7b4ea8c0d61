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


@pytest.mark.parametrize("name", ["folder.csv", "folder"])
def test_directory_is_refused_as_unreadable(existing, tmp_path, name):
    # Without an extension too: it said "cannot tell the format" before.
    folder = tmp_path / name
    folder.mkdir()
    message, _ = refuse(folder)
    assert "is a directory" in message
    assert_nothing_written(existing)


def test_missing_file_without_an_extension_says_it_is_missing(existing, tmp_path):
    message, _ = refuse(tmp_path / "nope")
    assert "no such file" in message


def test_unknown_extension_needs_format(existing, tmp_path):
    message, _ = refuse(write(tmp_path, "products.txt", HEADER + CHANGE_KEEP))
    assert "cannot tell the format" in message and "--format" in message
    assert_nothing_written(existing)


def test_stdin_needs_format(existing):
    message, _ = refuse("-", stdin=io.BytesIO((HEADER + CHANGE_KEEP).encode()))
    assert "--format" in message
    assert_nothing_written(existing)


@pytest.mark.parametrize("name", ["empty.csv", "empty.json"])  # empty JSON Lines: no products
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
    assert "line 1: colour: Not a field you can set (the fields are: name, price, quantity)" in message
    assert_nothing_written(existing)


@pytest.mark.parametrize(
    "header, expected",
    [
        ("name,price,quantity,", "line 1: column 4 has no name (a comma at the end of the header?)"),
        ("name,,price,", "line 1: columns 2, 4 have no name"),
    ],
)
def test_a_column_without_a_name_is_called_that(existing, tmp_path, header, expected):
    # Spreadsheets often end every line with a comma; it was ": Not a field you can set".
    message, _ = refuse(write(tmp_path, "p.csv", header + "\nKeep,9.99,9,\n"))
    assert expected in message
    assert "line 1: : " not in message
    assert_nothing_written(existing)


def test_an_overlong_csv_field_is_its_rows_error_and_the_rest_is_checked(existing, tmp_path):
    # The csv module stops at 131,072 characters a field: that ended the whole
    # check with "malformed CSV", where JSON reported the row and went on.
    content = (
        HEADER
        + "A,-1,1\n"
        + "x" * 200_000
        + ",1.00,1\n"
        + "y" * (1 << 20)
        + "y,1.00,1\n"
        + "B,-2,1\n"
        + CHANGE_KEEP
    )
    message, errors = refuse(write(tmp_path, "p.csv", content))
    assert errors.strip().splitlines() == [
        "line 2: price: Price must be greater than or equal to 0.",
        "line 3: name: Name must be at most 200 characters (it has 200000).",
        "line 4: a field is longer than 1048576 characters",
        "line 5: price: Price must be greater than or equal to 0.",
    ]
    assert "4 invalid row(s)" in message
    assert_nothing_written(existing)


def test_a_header_of_many_unknown_or_repeated_columns_gets_a_short_message(existing, tmp_path):
    # Any editor can upload such a header in the admin; it named every column
    # (and counted each one's repeats by scanning the whole header: quadratic).
    header = "name,price,quantity," + ",".join(f"c{i}" for i in range(20_000)) + ",x" * 20_000
    message, _ = refuse(write(tmp_path, "p.csv", header + "\nKeep,9.99,9\n"))
    assert "line 1: c0: Not a field you can set" in message
    assert "c9: Not a field you can set" in message and "c10:" not in message
    assert "and 19991 more unknown field(s)" in message  # c10..c19999 and x
    assert "repeated column(s): x" in message
    assert len(message) < 2_000
    jsonl = "{" + ", ".join(f'"k{i}": 1' for i in range(5_000)) + ', "name": "A", "price": "1.00"}\n'
    _, errors = refuse(write(tmp_path, "p.jsonl", jsonl))
    assert "and 4990 more unknown field(s)" in errors and len(errors) < 2_000
    assert_nothing_written(existing)


def test_broken_csv_quote_is_refused(existing, tmp_path):
    message, _ = refuse(write(tmp_path, "p.csv", HEADER + CHANGE_KEEP + '"Open,1.00,1\n'))
    assert "line 3: malformed CSV" in message
    assert_nothing_written(existing)


def test_malformed_json_array_is_refused(existing, tmp_path):
    content = '[\n{"name": "Keep", "price": "9.99"},\n{"name": "Bad" "price": 1}\n]'
    message, _ = refuse(write(tmp_path, "p.json", content))
    assert "line 3: item 2: malformed JSON" in message
    assert_nothing_written(existing)


def test_a_json_array_cut_inside_a_string_says_so_in_a_whole_sentence(existing, tmp_path):
    # It read "malformed JSON: Unterminated string starting at." (the json
    # module's position is given as the line instead).
    message, _ = refuse(write(tmp_path, "p.json", '[{"name": "Keep", "price": "9.99"}, {"name": "Cu'))
    assert "line 1: item 2: malformed JSON: Unterminated string. Nothing was written." in message
    _, errors = refuse(write(tmp_path, "p.jsonl", '{"name": "Keep", "price": "9.99"}\n{"name": "Cu\n'))
    assert "line 2: malformed JSON: Invalid control character at column 13" in errors
    assert " at at " not in errors
    assert_nothing_written(existing)


def test_an_oversized_json_array_element_is_called_too_long_not_malformed(existing, tmp_path):
    content = (
        '[{"name": "Keep", "price": "9.99", "note": "' + "x" * (3 << 20) + '"}, {"name": "B", "price": 1}]'
    )
    message, _ = refuse(write(tmp_path, "p.json", content))
    assert "line 1: item 1: the element is longer than 1048576 characters" in message, message[:200]
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
        ("Keep,1.00,1", "name: 'Keep' appears more than once in the file."),
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
        "line 2: price: Price must have at most 2 decimal places.",
        "line 4: price: Price must be greater than or equal to 0. quantity: Quantity must be an integer.",
        "line 5: name: 'A' appears more than once in the file.",
    ]
    assert "3 invalid row(s)" in message
    assert_nothing_written(existing)


def test_name_twice_across_batches_is_found(existing, tmp_path):
    rows = "".join(f"P{i},1.00,1\n" for i in range(50)) + "P3,2.00,2\n"
    _, errors = refuse(write(tmp_path, "p.csv", HEADER + rows), "--batch-size", "7")
    assert "line 52: name: 'P3' appears more than once in the file." in errors
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
        ('{"name": "X", "price": "1.00", "colour": "red"}', "colour: Not a field you can set"),
        ('{"name": "X"}', "price: This field is required."),
        ('["X", "1.00"]', "expected a JSON object, got an array"),
        ("null", "expected a JSON object, got null"),
        ("12.5", "expected a JSON object, got a number"),
        ('{"name": "X", "price": "Infinity"}', "price: Price must be a finite number"),
        ('{"name": "X", "price": true}', "price: Price must be a number"),
        ('{"name": 7, "price": "1.00"}', "name: Not a valid string."),
        ('{"name": null, "price": "1.00"}', "name: This field may not be null."),
        ('{"name": "X", "price": 1.005}', "price: Price must have at most 2 decimal places"),
    ],
    ids=[
        "unknown_field",
        "missing_field",
        "not_an_object",
        "null_not_an_object",
        "number_not_an_object",
        "infinite_price",
        "bool_price",
        "number_name",
        "null_name",
        "three_decimals",
    ],
)
@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_bad_json_record_is_reported_and_nothing_written(existing, tmp_path, obj, reason, fmt):
    records = ['{"name": "Keep", "price": "9.99", "quantity": 9}', obj]
    content = "[\n" + ",\n".join(records) + "\n]\n" if fmt == "json" else "\n".join(records) + "\n"
    _, errors = refuse(write(tmp_path, f"p.{fmt}", content))
    # The array's "[" has a line of its own, and its elements are numbered.
    where = "line 3: item 2" if fmt == "json" else "line 2"
    assert f"{where}: {reason}" in errors
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


# --- Hostile files: huge numbers, deep nesting, bad bytes, elements on one line -----

HUGE = "9" * 4301


@pytest.mark.parametrize(
    "name, content",
    [
        ("p.csv", f"name,price,quantity\nKeep,1.00,1\nBig,1.00,{HUGE}\n"),
        (
            "p.json",
            f'[\n{{"name": "Keep", "price": "1.00"}},\n{{"name": "Big", "price": "1", "quantity": {HUGE}}}\n]',
        ),
        (
            "p.jsonl",
            f'{{"name": "Keep", "price": "1.00"}}\n{{"name": "Big", "price": "1", "quantity": {HUGE}}}\n',
        ),
    ],
)
def test_a_4301_digit_quantity_is_a_row_error_not_a_traceback(existing, tmp_path, name, content):
    message, errors = refuse(write(tmp_path, name, content))
    assert "quantity: Quantity must be at most 2147483647" in errors
    assert "Traceback" not in message + errors
    assert_nothing_written(existing)


def test_a_4301_digit_price_is_a_row_error(existing, tmp_path):
    _, errors = refuse(write(tmp_path, "p.jsonl", f'{{"name": "Big", "price": {HUGE}}}\n'))
    assert "line 1: price: Price must have at most 10 digits before the decimal point" in errors
    assert_nothing_written(existing)


def test_a_deeply_nested_element_names_its_line_and_item(existing, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    message, errors = refuse(write(tmp_path, "p.json", '[{"name": "Keep", "price": "1"},\n' + deep + "]"))
    assert "line 2: item 2: malformed JSON: nested too deeply" in message
    assert "Traceback" not in message + errors
    assert_nothing_written(existing)


def test_json_numbers_in_a_file_are_exact_decimals(existing, tmp_path):
    _, errors = refuse(write(tmp_path, "p.jsonl", '{"name": "Keep", "price": 19.999999999999999}\n'))
    assert "line 1: price: Price must have at most 2 decimal places" in errors
    assert_nothing_written(existing)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_file_that_is_not_utf8_names_the_line_of_the_bad_byte(existing, tmp_path, fmt):
    if fmt == "csv":
        lines = ["name,price,quantity"] + [f"p{i},1.00,1" for i in range(2, 5002)]
    else:
        lines = ["["] + [f'{{"name": "p{i}", "price": "1.00"}},' for i in range(2, 5002)]
    lines[5001 - 1] = lines[5001 - 1].replace("p5001", "p\udcff5001")  # line 5,001 holds a bad byte
    data = "\n".join(lines).encode("utf-8", "surrogateescape") + b"\n"
    path = tmp_path / f"p.{fmt}"
    path.write_bytes(data)
    message, _ = refuse(path)
    assert "line 5001: the file is not valid UTF-8" in message
    assert_nothing_written(existing)


def test_a_bad_byte_on_line_3_is_reported_on_line_3(existing, tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"name,price,quantity\nKeep,1.00,1\nB\xffd,1.00,1\n")
    message, _ = refuse(path)
    assert "line 3: the file is not valid UTF-8" in message


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize(
    "name, lines, where",
    [
        ("p.csv", ["name,price,quantity", "Fine,1.00,1", "Bad,x,1"], "line 3: price"),
        (
            "p.json",
            ['[{"name": "Fine", "price": "1.00"},', "", '{"name": "Bad", "price": "x"}]'],
            "line 3: item 2: price",
        ),
    ],
)
def test_a_line_ends_at_cr_lf_or_crlf_alike(existing, tmp_path, newline, name, lines, where):
    _, errors = refuse(write(tmp_path, name, newline.join(lines) + newline))
    assert f"{where}: Price must be a number" in errors, errors
    assert_nothing_written(existing)


def test_a_json_array_on_one_line_names_each_bad_item(existing, tmp_path):
    content = '[{"name": "Keep", "price": "x"}, {"name": "Fine", "price": "1"}, {"name": "Neg", "price": -1}]'
    _, errors = refuse(write(tmp_path, "p.json", content))
    assert "line 1: item 1: price: Price must be a number" in errors
    assert "line 1: item 3: price: Price must be greater than or equal to 0" in errors
    assert "item 2" not in errors
    assert_nothing_written(existing)


@pytest.mark.parametrize(
    "name, content, where",
    [
        ("s.json", '[{"name": "a\\ud800b", "price": "1.00", "quantity": 1}]', "line 1: item 1: name"),
        ("s.jsonl", '{"name": "a\\ud800b", "price": "1.00", "quantity": 1}\n', "line 1: name"),
    ],
)
def test_a_lone_surrogate_in_a_name_is_a_row_error_as_on_the_api(existing, tmp_path, name, content, where):
    # It reached the INSERT (UnicodeEncodeError: a traceback here, a 500 in
    # the admin's import); the API answers 400 with DRF's message.
    message, errors = refuse(write(tmp_path, name, content))
    assert f"{where}: Surrogate characters are not allowed: U+D800" in errors + message, errors + message
    assert "Traceback" not in errors
    assert_nothing_written(existing)


@pytest.mark.parametrize("separator", [";", "\t"])
def test_a_file_separated_otherwise_than_by_commas_says_so(existing, tmp_path, separator):
    header = separator.join(["name", "price", "quantity"])
    message, _ = refuse(write(tmp_path, "p.csv", f"{header}\nMug{separator}1.00{separator}1\n".encode()))
    assert "separated by commas" in message, message
    assert "missing required column" not in message, message  # the cause alone, not its symptoms
    assert_nothing_written(existing)
