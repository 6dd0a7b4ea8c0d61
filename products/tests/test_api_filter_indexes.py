"""Filters answer through their indexes and give the same pages either way (SQLite and PostgreSQL)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection

from products import filters
from products.models import Product

pytestmark = pytest.mark.django_db

NAMES = ["Blue mug", "BLUE CUP", "Überzug", "übermut", "Tea pot", "Teapot lid", 'Say "cheese"', "mug rack"]


@pytest.fixture
def catalogue():
    for i, name in enumerate(NAMES):
        Product.objects.create(name=name, price=Decimal(i) + Decimal("0.50"), quantity=i % 3)


def walk(client, query: str) -> list[str]:
    """Return every name the list returns for ``query``, page after page."""
    names, url = [], "/api/products/?page_size=2&" + query
    while url:
        body = client.get(url).json()
        names += [p["name"] for p in body["results"]]
        url = body["next"]
    return names


QUERIES = [
    "search=mug",
    "search=BLUE",
    "search=über",
    "search=ÜBER",
    'search="cheese"',
    "search=zzzz",
    "search=ug",
    "in_stock=false&ordering=-price",
    "in_stock=true&ordering=quantity",
    "min_price=2.5&max_price=5.5&ordering=-updated_at",
    "search=te&min_price=4&ordering=name",
]


@pytest.mark.parametrize("query", QUERIES)
def test_narrowed_and_scanned_pages_agree(anon_client, catalogue, monkeypatch, query):
    monkeypatch.setattr(filters, "NARROW_LIMIT", 1000)
    narrowed = walk(anon_client, query)
    monkeypatch.setattr(filters, "NARROW_LIMIT", 0)  # every filter "common": scan the ordering
    scanned = walk(anon_client, query)
    assert narrowed == scanned


def test_search_finds_what_it_should(anon_client, catalogue):
    assert walk(anon_client, "search=über") == ["Überzug", "übermut"]
    assert walk(anon_client, "search=blue") == ["BLUE CUP", "Blue mug"]
    assert walk(anon_client, 'search="cheese"') == ['Say "cheese"']


def test_the_search_index_follows_every_write(anon_client, catalogue):
    mug = Product.objects.get(name="Blue mug")
    mug.name = "Green jug"
    mug.save()
    Product.objects.filter(name="mug rack").update(name="jug rack")
    Product.objects.filter(name="BLUE CUP").delete()
    with connection.cursor() as cursor:  # raw SQL too (triggers on SQLite, an expression index on PostgreSQL)
        table = Product._meta.db_table
        cursor.execute(f"UPDATE {table} SET name = %s WHERE name = %s", ["Jugged tea pot", "Tea pot"])
    assert walk(anon_client, "search=jug") == ["Green jug", "Jugged tea pot", "jug rack"]
    assert walk(anon_client, "search=mug") == []
    assert walk(anon_client, "search=blue") == []


FILTERS = [
    "",
    "search=mug",
    "search=zzzz",
    "search=ug",
    "min_price=2",
    "max_price=3",
    "min_price=1&max_price=3",
    "in_stock=true",
    "in_stock=false",
]
ORDERINGS = ["name", "-name", "price", "-price", "quantity", "-quantity", "created_at", "-updated_at"]


def _plan(sql: str) -> str:
    """Return the plan of a captured query (Django captures it with its parameters inlined)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql)
            return " / ".join(str(row[-1]) for row in cursor.fetchall())
        # Is there a plan without reading the whole table? With sequential
        # scans priced out, PostgreSQL still picks one only when no index serves.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql)
        return " / ".join(row[0] for row in cursor.fetchall())


@pytest.mark.parametrize("query", FILTERS)
def test_every_filter_and_ordering_reads_through_an_index(anon_client, catalogue, query):
    from django.test.utils import CaptureQueriesContext

    for ordering in ORDERINGS:
        with CaptureQueriesContext(connection) as captured:
            assert anon_client.get(f"/api/products/?{query}&ordering={ordering}").status_code == 200
        table = Product._meta.db_table
        for executed in captured.captured_queries:
            sql = executed["sql"]
            if not sql.startswith("SELECT") or table not in sql:
                continue
            plan = _plan(sql)
            steps = plan.split(" / ")
            full_scans = [s for s in steps if s.split(" USING")[0] == f"SCAN {table}" and "USING" not in s]
            assert not full_scans, (query, ordering, sql, plan)
            assert "Seq Scan" not in plan, (query, ordering, sql, plan)
