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
    ],
)
def test_clean_name_accepts(raw, expected):
    assert validators.clean_name(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "x" * 201, "a/b", "tab\there", "nul\x00", "del\x7f", 5, None])
def test_clean_name_refuses(raw):
    with pytest.raises(ValidationError):
        validators.clean_name(raw)


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
