"""The list's fast paths (row conversion, the compiled page read, the JSON) give exactly what DRF gives."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.renderers import JSONRenderer

from products import selectors
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


ON_SQLITE = connection.vendor == "sqlite"
ORDERINGS = ("name", "-name", "price", "-price", "quantity", "-quantity", "created_at", "-updated_at")


@pytest.fixture
def direct_pages(monkeypatch) -> list[str]:
    """The SQL of each page the compiled page read served (the real function, counted)."""
    served: list[str] = []
    real = selectors._read_page_direct

    def counted(conn, compiled, after):
        served.append(compiled.sql)
        return real(conn, compiled, after)

    monkeypatch.setattr(selectors, "_read_page_direct", counted)
    return served


def walk(client, url: str) -> list[dict]:
    """Every page from ``url`` on, following ``next``; then back again along ``previous``."""
    pages = []
    while url:
        response = client.get(url, HTTP_ACCEPT="application/json")
        assert response.status_code == 200, response.content
        pages.append(response.json())
        url = pages[-1]["next"]
    url = pages[-1]["previous"]
    while url:
        response = client.get(url, HTTP_ACCEPT="application/json")
        assert response.status_code == 200, response.content
        pages.append(response.json())
        url = pages[-1]["previous"]
    return pages


def test_the_compiled_page_read_gives_every_page_the_orm_gives(anon_client, settings, direct_pages):
    stamps = [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 11, 26, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    for i in range(23):
        # Ties on every sort key, so that the name decides between them.
        product = Product.objects.create(
            name=f"p{i:02d}", price=Decimal(("0.10", "19.99", "2.68")[i % 3]), quantity=i % 4
        )
        Product.objects.filter(pk=product.pk).update(
            created_at=stamps[i % 2], updated_at=stamps[(i // 2) % 2]
        )
    for ordering in ORDERINGS:
        url = f"/api/products/?page_size=5&ordering={ordering}"
        direct = walk(anon_client, url)
        settings.PRODUCT_SQLITE_DIRECT_READ = False
        through_orm = walk(anon_client, url)
        settings.PRODUCT_SQLITE_DIRECT_READ = True
        assert direct == through_orm, ordering
        assert len(direct) == 9 and sorted(r["name"] for page in direct[:5] for r in page["results"]) == [
            f"p{i:02d}" for i in range(23)
        ]
    # Each ordering: 5 pages forward (the first without a cursor), 4 back.
    assert len(direct_pages) == (9 * len(ORDERINGS) if ON_SQLITE else 0)


def test_a_filtered_list_or_logged_queries_read_through_the_orm(anon_client, direct_pages):
    for name, price in [("cheap", "1.00"), ("dear", "50.00")]:
        Product.objects.create(name=name, price=Decimal(price), quantity=1)
    response = anon_client.get("/api/products/?min_price=10", HTTP_ACCEPT="application/json")
    assert [row["name"] for row in response.json()["results"]] == ["dear"]
    assert direct_pages == []
    with CaptureQueriesContext(connection) as queries:
        response = anon_client.get("/api/products/", HTTP_ACCEPT="application/json")
    assert [row["name"] for row in response.json()["results"]] == ["cheap", "dear"]
    assert any("ORDER BY" in query["sql"] for query in queries)
    assert direct_pages == []
    anon_client.get("/api/products/", HTTP_ACCEPT="application/json")
    assert len(direct_pages) == (1 if ON_SQLITE else 0)


def test_a_page_is_the_bytes_drfs_json_renderer_writes(anon_client):
    names = ['quote " back \\ slash', "line\u2028sep\u2029para", "zero\u200bwidth \ufeff", "emoji 😀 ünï"]
    for name in names:
        Product.objects.create(name=name, price=Decimal("1.50"), quantity=2)
    response = anon_client.get("/api/products/?page_size=2", HTTP_ACCEPT="application/json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    data = json.loads(response.content)
    assert response.content == JSONRenderer().render(data)
    assert b"\\u2028" in response.content or b"\\u2028" in anon_client.get(data["next"]).content
    # An indent asked for: DRF renders it.
    indented = anon_client.get("/api/products/?page_size=2", HTTP_ACCEPT="application/json; indent=2")
    assert indented.content == JSONRenderer().render(data, "application/json; indent=2")
    assert b'\n  "next"' in indented.content


def test_a_queryset_with_more_than_the_product_table_reads_through_the_orm(direct_pages):
    for name in ("a", "b"):
        Product.objects.create(name=name, price=Decimal("1.00"), quantity=1)
    plain = selectors.representations(Product.objects.all())
    assert [row["name"] for row in selectors.representation_page(plain, ("name",), 10)] == ["a", "b"]
    # The same shape with an (empty) table joined: not the SQL compiled for the plain page.
    joined = selectors.representations(Product.objects.extra(tables=["auth_user"]))
    assert selectors.representation_page(joined, ("name",), 10) == []
    assert len(direct_pages) == (1 if ON_SQLITE else 0)
