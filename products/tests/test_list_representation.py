"""The list's fast row conversion gives exactly what the serializer gives."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection

from products.models import Product
from products.serializers import ProductSerializer

pytestmark = pytest.mark.django_db


def test_list_rows_match_the_serializer_byte_for_byte(anon_client):
    for name, price in [("a", "0.00"), ("b", "19.99"), ("c", "9999999999.99"), ("d", "0.10")]:
        Product.objects.create(name=name, price=Decimal(price), quantity=3)
    # Whole seconds: ISO text without a fraction, as the serializer writes it.
    Product.objects.filter(name="b").update(created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    with connection.cursor() as cursor:  # written outside Django, with an offset
        cursor.execute(
            "UPDATE products_product SET updated_at = %s WHERE name = 'c'", ["2026-01-02 03:04:05+02:00"]
        )
    expected = ProductSerializer(Product.objects.order_by("name"), many=True).data
    for ordering in ("name", "-created_at", "price"):
        response = anon_client.get(
            f"/api/products/?page_size=500&ordering={ordering}", HTTP_ACCEPT="application/json"
        )
        assert response.status_code == 200
        got = {row["name"]: row for row in response.json()["results"]}
        assert got == {row["name"]: dict(row) for row in expected}
    assert got["b"]["created_at"] == "2026-01-02T03:04:05Z"
    assert got["c"]["updated_at"] == "2026-01-02T01:04:05Z"


def test_cursor_walk_by_timestamp_visits_every_product_once(anon_client):
    for i in range(7):
        Product.objects.create(name=f"p{i}", price=Decimal(i), quantity=i)
    seen, url = [], "/api/products/?page_size=3&ordering=-updated_at"
    while url:
        page = anon_client.get(url, HTTP_ACCEPT="application/json").json()
        seen += [row["name"] for row in page["results"]]
        url = page["next"]
    assert sorted(seen) == [f"p{i}" for i in range(7)] and len(seen) == 7
