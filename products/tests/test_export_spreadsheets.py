"""CSV formula injection: the admin's spreadsheet download is neutralised, the CLI round trip stays exact."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from products.filewriters import spreadsheet_safe
from products.models import Product

pytestmark = pytest.mark.django_db

FORMULAS = [
    '=HYPERLINK("evil.example?x=1","click")',
    "+1+1",
    "-2+3",
    "@SUM(A1:A2)",
]  # tab and CR starts are checked on the function: the product rules refuse control characters
HARMLESS = ["Plain mug", "Mug = cup", "50% off", "'already quoted"]


@pytest.fixture
def products(make_product) -> list[Product]:
    return [make_product(name) for name in HARMLESS + FORMULAS]


def rows(text: str) -> dict[str, str]:
    return {row["name"]: row["price"] for row in csv.DictReader(io.StringIO(text, newline=""))}


def test_neutralises_exactly_the_owasp_formula_starts():
    for name in [*FORMULAS, "\tTabbed", "\rReturn"]:
        assert spreadsheet_safe(name) == "'" + name
    assert [spreadsheet_safe(n) for n in HARMLESS] == HARMLESS


def test_admin_export_neutralises_formula_cells(admin_client, products):
    response = admin_client.post(
        "/admin/products/product/",
        {"action": "export_selected_as_csv", "_selected_action": [p.pk for p in products]},
    )
    exported = rows(b"".join(response.streaming_content).decode())
    assert set(exported) == {"'" + n for n in FORMULAS} | set(HARMLESS)


def export(*args: str) -> str:
    out = io.StringIO()
    call_command("export_products", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_export_products_is_an_exact_round_trip_by_default(products, tmp_path):
    before = set(Product.objects.values_list("name", "price", "quantity"))
    path = tmp_path / "all.csv"
    path.write_text(export(), encoding="utf-8", newline="")
    assert set(rows(path.read_text(encoding="utf-8"))) == set(FORMULAS) | set(HARMLESS)
    Product.objects.all().delete()
    Product.objects.bulk_create(Product(name=n, price=Decimal("9.99"), quantity=0) for n in FORMULAS)
    call_command("import_products", str(path), stdout=io.StringIO(), stderr=io.StringIO())
    assert set(Product.objects.values_list("name", "price", "quantity")) == before


def test_export_products_spreadsheet_safe_prefixes_formulas_for_csv_only(products):
    assert set(rows(export("--spreadsheet-safe"))) == {"'" + n for n in FORMULAS} | set(HARMLESS)
    with pytest.raises(CommandError, match="CSV only"):
        export("--spreadsheet-safe", "--format", "json")
