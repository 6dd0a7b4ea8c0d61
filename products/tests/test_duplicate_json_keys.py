"""A JSON object that names a key twice is bad input: 400 on the API, a row error in an import.

Before, the last value silently won (``{"price": "1", "price": "-5"}`` was
read as -5), so what was stored depended on the parser, not on the client,
and another reader of the same body (a proxy, a log) could take the first.
"""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from products import jsonnumbers
from products.fileformats import MAX_RECORD_CHARS
from products.models import Product


def test_the_decoder_refuses_a_repeated_key_at_any_depth():
    for text in ('{"a": 1, "a": 1}', '[{"x": {"b": 1, "c": 2, "b": 3}}]'):
        with pytest.raises(jsonnumbers.DuplicateKey):
            jsonnumbers.loads(text)
    # Distinct keys, and the same key in different objects, are fine.
    assert jsonnumbers.loads('[{"a": 1}, {"a": 2}, {"a": {"a": 3}}]') == [{"a": 1}, {"a": 2}, {"a": {"a": 3}}]


@pytest.mark.parametrize(
    "method, url, body",
    [
        ("post", "/api/products/", '{"name": "New", "name": "Other", "price": "1"}'),
        ("post", "/api/products/", '{"name": "New", "price": "1", "price": "-5"}'),
        ("post", "/products", '{"name": "New", "price": "1", "price": "2"}'),
        ("patch", "/api/products/Mug/", '{"price": "2", "price": "3"}'),
        ("put", "/api/products/Mug/", '{"name": "Mug", "price": "2", "quantity": 1, "quantity": 9}'),
        ("post", "/api/products/Mug/stock/", '{"delta": 1, "delta": -3}'),
    ],
)
def test_a_body_naming_a_key_twice_is_400_and_changes_nothing(editor_client, make_product, method, url, body):
    make_product("Mug", price="1.00", quantity=3)
    response = getattr(editor_client, method)(url, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert "duplicate key" in response.json()["detail"]
    assert list(Product.objects.values_list("name", "price", "quantity")) == [("Mug", Decimal("1.00"), 3)]


@pytest.fixture
def existing(db) -> Product:
    return Product.objects.create(name="Keep", price="1.00", quantity=1)


def refuse(path) -> str:
    err = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("import_products", str(path), stdout=io.StringIO(), stderr=err)
    return str(raised.value) + "\n" + err.getvalue()


def assert_nothing_written() -> None:
    assert list(Product.objects.values_list("name", "price", "quantity")) == [("Keep", Decimal("1.00"), 1)]


def test_an_import_file_naming_a_key_twice_says_where(existing, tmp_path):
    array = tmp_path / "p.json"
    array.write_text('[{"name": "A", "price": "1"},\n {"name": "B", "price": "1", "price": "2"}]')
    assert "line 2: item 2: malformed JSON: duplicate key 'price' in an object" in refuse(array)
    assert_nothing_written()
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"name": "A", "price": "1"}\n{"name": "B", "name": "C", "price": "1"}\n')
    assert "line 2: malformed JSON: duplicate key 'name' in an object" in refuse(lines)
    assert_nothing_written()


def test_in_a_long_json_array_the_repeated_key_is_not_called_too_long(existing, tmp_path):
    # The bad element is followed by more than MAX_RECORD_CHARS of the file:
    # reading on cannot make it valid, so it is not "unfinished" (too long).
    good = "".join(f'{{"name": "P{i}", "price": "1"}},\n' for i in range(MAX_RECORD_CHARS // 20))
    path = tmp_path / "long.json"
    path.write_text('[{"name": "X", "price": "1", "price": "2"},\n' + good + '{"name": "Z", "price": "1"}]')
    message = refuse(path)
    assert "line 1: item 1: malformed JSON: duplicate key 'price' in an object" in message, message
    assert "longer than" not in message
    assert_nothing_written()
