"""The product rules (products.validators): what each clean_* accepts and refuses.

Serializers, the admin form, the model and the import all call these, so the
cases here hold for every way in.
"""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from products import validators


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  Mug  ", "Mug"),
        ("Café ☕", "Café ☕"),
        ("x" * 200, "x" * 200),
        ("a.b?c#d%e+f&g=h", "a.b?c#d%e+f&g=h"),
        # U+FEFF is whitespace to the schema's pattern (JavaScript's \s), not to str.strip().
        ("\ufeff Mug \ufeff", "Mug"),
        ("Mu\ufeffg", "Mu\ufeffg"),
    ],
)
def test_clean_name_accepts(raw, expected):
    assert validators.clean_name(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "\ufeff\ufeff",
        " \ufeff\u3000",
        "x" * 201,
        "a/b",
        "tab\there",
        "nul\x00",
        "del\x7f",
        5,
        None,
    ],
)
def test_clean_name_refuses(raw):
    with pytest.raises(ValidationError):
        validators.clean_name(raw)


@pytest.mark.django_db
def test_every_name_the_api_stores_matches_the_schemas_pattern_as_javascript_reads_it(editor_client):
    # The pattern is ECMA-262: its \s includes U+FEFF, which Python's re and
    # str.strip() do not count. "\ufeff\ufeff" was stored, and a JavaScript
    # client validating responses could not read any list page holding it.
    import re

    js_space = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
    pattern = re.compile(validators.NAME_SCHEMA_PATTERN.replace("\\s", js_space))
    for raw in ["\ufeff\ufeff", "\ufeffMug\ufeff", "\u3000Cup\u3000"]:
        response = editor_client.post("/api/products/", {"name": raw, "price": "1.00"}, format="json")
        if response.status_code == 201:
            assert pattern.search(response.json()["name"]), response.json()
        else:
            assert response.json() == {"name": [validators.BLANK_NAME_MESSAGE]}
    assert editor_client.get("/api/products/Mug/").status_code == 200


@pytest.mark.parametrize(
    "raw, expected",
    [
        (19.99, Decimal("19.99")),
        ("19.99", Decimal("19.99")),
        (0, Decimal("0.00")),
        ("7", Decimal("7.00")),
        ("9999999999.99", Decimal("9999999999.99")),
        ("1.50", Decimal("1.50")),
    ],
)
def test_clean_price_accepts(raw, expected):
    assert validators.clean_price(raw) == expected


@pytest.mark.parametrize(
    "raw", ["-0.01", -1, "1.999", "abc", "", "NaN", "Infinity", True, None, "10000000000.00", [1]]
)
def test_clean_price_refuses(raw):
    with pytest.raises(ValidationError):
        validators.clean_price(raw)


@pytest.mark.parametrize("raw", [-1, "-3", 1.5, "1.5", "x", True, None, 2**31])
def test_clean_quantity_refuses(raw):
    with pytest.raises(ValidationError):
        validators.clean_quantity(raw)
