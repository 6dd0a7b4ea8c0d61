"""The admin import in a real browser: a good file imported after its dry run, a bad row refused.

With UPDATE_SCREENSHOTS=1 the pages are photographed into docs/screenshots/
(admin-import-*.png); otherwise into test-artifacts/.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from products.models import Product

from . import test_browser as _browser
from .test_browser import BASE_DIR, admin_login, api_get, changelist_names, make_admin

# The browser fixtures live in test_browser.py; use them here too.
browser, console, page = _browser.browser, _browser.console, _browser.page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = (
    BASE_DIR / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS")
    else BASE_DIR / "test-artifacts" / "screenshots"
)


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"admin-import-{name}.png"), full_page=True)


def choose_file(page: Page, tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    page.set_input_files("#id_file", str(path))
    page.get_by_role("button", name="Check the file (dry run)").click()


def test_admin_imports_a_good_file_after_its_dry_run(page, live_server, tmp_path):
    make_admin()
    Product.objects.create(name="Ceramic teapot", price="24.90", quantity=12)
    Product.objects.create(name="Stoneware mug", price="11.20", quantity=85)
    # Read twice so the row is cached: a missed invalidation would then show.
    api_get(live_server, "Stoneware mug")
    assert api_get(live_server, "Stoneware mug").json()["price"] == "11.20"
    admin_login(page)

    page.get_by_role("link", name="Import", exact=True).click()
    expect(page.locator("#content h1")).to_have_text("Import products")
    shot(page, "1-upload")
    choose_file(
        page,
        tmp_path,
        "spring.csv",
        "name,price,quantity\nCeramic teapot,24.90,12\nStoneware mug,9.90,85\n"
        "Linen tea towel,8.75,40\nWool blanket,120.00,3\n",
    )
    expect(page.locator("#import-report h2")).to_contain_text("nothing has been written yet")
    expect(page.locator("#count-created")).to_have_text("2")
    expect(page.locator("#count-updated")).to_have_text("1")
    expect(page.locator("#count-unchanged")).to_have_text("1")
    shot(page, "2-dry-run")
    assert Product.objects.count() == 2  # the dry run wrote nothing
    assert api_get(live_server, "Stoneware mug").json()["price"] == "11.20"

    page.get_by_role("button", name="Confirm import").click()
    expect(page.locator(".messagelist")).to_have_text(
        "Imported spring.csv: created 2, updated 1, unchanged 1."
    )
    assert changelist_names(page) == ["Ceramic teapot", "Linen tea towel", "Stoneware mug", "Wool blanket"]
    shot(page, "3-done")
    assert Product.objects.get(name="Stoneware mug").price == Decimal("9.90")
    assert api_get(live_server, "Stoneware mug").json()["price"] == "9.90"  # the cached row was invalidated


def test_admin_import_lists_every_bad_row_and_writes_nothing(page, live_server, tmp_path):
    make_admin()
    admin_login(page)
    page.goto("/admin/products/product/import/")
    choose_file(
        page,
        tmp_path,
        "broken.csv",
        "name,price,quantity\nDesk fan,39.99,7\nOak board,12.345,1\nBad/name,5.00,1\nKettle,54.50,-2\n",
    )
    errors = page.locator("#import-errors li")
    expect(errors).to_have_count(3)
    texts = errors.all_inner_texts()
    assert [re.match(r"line (\d+): (\w+): ", t).groups() for t in texts] == [
        ("3", "price"),
        ("4", "name"),
        ("5", "quantity"),
    ], texts
    expect(page.locator("#import-confirm")).to_have_count(0)
    shot(page, "4-bad-rows")
    assert not Product.objects.exists()
