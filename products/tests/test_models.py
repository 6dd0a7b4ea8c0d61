"""The database enforces the product rules itself, whatever the write path."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

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
