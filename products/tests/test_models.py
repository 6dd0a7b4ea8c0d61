"""The database enforces the product rules itself, whatever the write path."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from products import validators
from products.models import Product

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "Neg price", "price": Decimal("-0.01"), "quantity": 1},
        {"name": "Neg qty", "price": Decimal("1.00"), "quantity": -1},
        {"name": "", "price": Decimal("1.00"), "quantity": 1},
        {"name": "a/b", "price": Decimal("1.00"), "quantity": 1},
    ],
    ids=["negative_price", "negative_quantity", "blank_name", "slash_in_name"],
)
def test_database_constraint_rejects(fields):
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.create(**fields)
    assert not Product.objects.exists()


def test_database_rejects_duplicate_name():
    Product.objects.create(name="Mug", price="1.00")
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.create(name="Mug", price="2.00")
    assert Product.objects.get(name="Mug").price == Decimal("1.00")


def test_queryset_update_cannot_break_the_rules():
    Product.objects.create(name="Mug", price="1.00", quantity=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.filter(name="Mug").update(quantity=-5)
    assert Product.objects.get(name="Mug").quantity == 1


def test_price_keeps_cents_exactly():
    Product.objects.create(name="Exact", price=Decimal("9999999999.99"), quantity=0)
    assert Product.objects.get(name="Exact").price == Decimal("9999999999.99")


def test_full_clean_reports_rule_breaks():
    product = Product(name="bad\x07name", price=Decimal("-1"), quantity=-1)
    with pytest.raises(ValidationError) as excinfo:
        product.full_clean()
    assert set(excinfo.value.message_dict) == {"name", "price", "quantity"}


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
