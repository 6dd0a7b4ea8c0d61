"""The admin's own actions: export the selection as CSV, mark out of stock (with invalidation).

Editing in the admin is a write path of its own: test_cache_invalidation.py
proves it invalidates, and test_browser.py drives the admin in a browser.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.contrib.auth.models import User

from products import cache
from products.models import Product
from products.selectors import product_json

from .support.names import CASE_FOLDING_NAMES

CHANGELIST = "/admin/products/product/"


def test_admin_export_selected_as_csv(admin_client, make_product):
    mug = make_product("Mug", "3.50", 4)
    bowl = make_product("Bowl, large", "12.00", 0)
    make_product("Not selected", "1.00", 1)
    response = admin_client.post(
        CHANGELIST, {"action": "export_selected_as_csv", "_selected_action": [mug.pk, bowl.pk]}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode()
    assert body == 'name,price,quantity\nMug,3.50,4\n"Bowl, large",12.00,0\n'


def test_admin_search_ignores_case_in_every_alphabet_as_the_api_does(admin_client, make_product):
    # Django's admin search is icontains, and SQLite's LIKE folds ASCII only.
    for name in CASE_FOLDING_NAMES:
        make_product(name, "1.00", 1)

    def listed(query: str) -> list[str]:
        response = admin_client.get(CHANGELIST, {"q": query})
        assert response.status_code == 200
        return sorted(product.name for product in response.context["cl"].result_list)

    assert listed("ärger") == listed("ÄRGER") == ["Ärger Ölkanne"]
    assert listed("CRÈME") == ["crème brûlée"]
    assert listed("σοφια") == ["ΣΟΦΙΑ vase"]
    assert listed("ölk ÄRG") == ["Ärger Ölkanne"]  # words are each looked for, as Django does
    assert listed('"ölkanne ärger"') == []  # a quoted phrase is one word
    assert listed("ß") == ["Straße mug"]  # folded as the API's search folds
    assert listed("GLASS") == ["Classic glass"]


@pytest.mark.django_db(transaction=True)
def test_admin_mark_out_of_stock_updates_and_invalidates(admin_client):
    mug = Product.objects.create(name="Mug", price="3.50", quantity=4)
    other = Product.objects.create(name="Other", price="1.00", quantity=9)
    cache.get_product("Mug", product_json)
    assert cache.get_product("Mug", product_json).hit is True

    response = admin_client.post(
        CHANGELIST, {"action": "mark_out_of_stock", "_selected_action": [mug.pk]}, follow=True
    )

    assert response.status_code == 200
    assert "Marked 1 product(s) out of stock" in response.content.decode()
    assert Product.objects.get(pk=mug.pk).quantity == 0
    assert Product.objects.get(pk=other.pk).quantity == 9
    fresh = cache.get_product("Mug", product_json)
    assert fresh.hit is False and json.loads(fresh.data)["quantity"] == 0
    # The product's History shows the change, as for a save in its form.
    history = admin_client.get(f"{CHANGELIST}{mug.pk}/history/").content.decode()
    assert "Changed Quantity." in history
    assert (
        "doesn’t have a change history"
        in admin_client.get(f"{CHANGELIST}{other.pk}/history/").content.decode()
    )


@pytest.mark.django_db(transaction=True)
def test_mark_out_of_stock_leaves_products_already_at_zero_untouched(admin_client):
    # A browser audit: the action rewrote products already at 0, so their
    # updated_at and ETag moved, and an editor's page (or an API client's
    # If-Match) opened before was refused as "changed by someone else".
    empty = Product.objects.create(name="Empty", price="1.00", quantity=0)
    full = Product.objects.create(name="Full", price="1.00", quantity=3)
    before = Product.objects.get(pk=empty.pk).updated_at

    response = admin_client.post(
        CHANGELIST, {"action": "mark_out_of_stock", "_selected_action": [empty.pk, full.pk]}, follow=True
    )

    assert "Marked 1 product(s) out of stock. (1 already were)" in response.content.decode()
    assert Product.objects.get(pk=empty.pk).updated_at == before
    assert Product.objects.get(pk=full.pk).quantity == 0
    assert (
        "doesn’t have a change history"
        in admin_client.get(f"{CHANGELIST}{empty.pk}/history/").content.decode()
    )
    # On a list filtered on stock, the selection no longer matches once done
    # (a review saw "(-2 already were)").
    again = Product.objects.create(name="Again", price="1.00", quantity=2)
    response = admin_client.post(
        f"{CHANGELIST}?in_stock=yes",
        {"action": "mark_out_of_stock", "_selected_action": [again.pk]},
        follow=True,
    )
    assert "Marked 1 product(s) out of stock.</li>" in response.content.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("selection", ["ticked", "across"])
def test_admin_export_of_a_searched_list_reads_the_search_on_its_own_connection(admin_client, selection):
    # A browser audit: after a search, "Export selected as CSV" answered 500
    # on SQLite. Outside a transaction the export reads on a connection of
    # its own, which lacked the search's case-folding function.
    blue = Product.objects.create(name="Blue mug", price="3.50", quantity=4)
    Product.objects.create(name="BLUE bowl", price="2.00", quantity=1)
    Product.objects.create(name="Red mug", price="1.00", quantity=1)
    form = {"action": "export_selected_as_csv", "index": "0"}
    if selection == "across":
        form |= {"select_across": "1", "_selected_action": [blue.pk]}
    else:
        form["_selected_action"] = list(
            Product.objects.filter(name__icontains="blue").values_list("pk", flat=True)
        )

    response = admin_client.post(f"{CHANGELIST}?q=blue", form)

    assert response.status_code == 200, response.content[:300]
    body = b"".join(response.streaming_content).decode()
    assert body == "name,price,quantity\nBlue mug,3.50,4\nBLUE bowl,2.00,1\n"  # in pk order


def test_two_editors_in_the_admin_cannot_silently_overwrite_each_other(admin_client, make_product):
    # SPEC: two editors cannot silently overwrite each other. Both open the
    # change page; the first saves the price, the second (on the page opened
    # before) saves the quantity: that save is refused, the price is kept.
    lamp = make_product("Lamp", "5.00", 2)
    change = f"{CHANGELIST}{lamp.pk}/change/"
    page = admin_client.get(change).content.decode()
    seen = lamp.updated_at.isoformat()
    assert f'name="seen_version" value="{seen}"' in page
    first = admin_client.post(
        change, {"name": "Lamp", "price": "99.99", "quantity": "2", "seen_version": seen}
    )
    assert first.status_code == 302
    second = admin_client.post(
        change, {"name": "Lamp", "price": "5.00", "quantity": "50", "seen_version": seen}
    )
    assert second.status_code == 200  # the form again, with the error
    assert "changed by someone else after you opened this page" in second.content.decode()
    assert Product.objects.filter(pk=lamp.pk).values_list("price", "quantity").get() == (Decimal("99.99"), 2)
    # Reloaded, the second editor's save goes through.
    fresh = Product.objects.get(pk=lamp.pk).updated_at.isoformat()
    again = admin_client.post(
        change, {"name": "Lamp", "price": "99.99", "quantity": "50", "seen_version": fresh}
    )
    assert again.status_code == 302 and Product.objects.get(pk=lamp.pk).quantity == 50


@pytest.mark.parametrize("seen", [None, ""])
def test_an_admin_save_that_does_not_say_its_version_is_refused(admin_client, make_product, seen):
    # A hand-made POST without the page's version (or with it empty) could
    # undo a change it never showed; the API's empty If-Match answers 412.
    lamp = make_product("Lamp", "5.00", 2)
    change = f"{CHANGELIST}{lamp.pk}/change/"
    Product.objects.filter(pk=lamp.pk).update(price="99.99")  # a change made since
    data = {"name": "Lamp", "price": "5.00", "quantity": "50"}
    if seen is not None:
        data["seen_version"] = seen
    response = admin_client.post(change, data)
    assert response.status_code == 200
    assert "does not say which version of the product" in response.content.decode()
    assert Product.objects.filter(pk=lamp.pk).values_list("price", "quantity").get() == (Decimal("99.99"), 2)


def test_marking_more_products_than_the_history_limit_changes_them_all_and_says_history_was_skipped(
    admin_client, monkeypatch
):
    from django.contrib.admin.models import LogEntry

    from products import admin as product_admin

    monkeypatch.setattr(product_admin, "HISTORY_LIMIT", 2)
    products = [Product.objects.create(name=f"P{i}", price="1.00", quantity=3) for i in range(3)]
    response = admin_client.post(
        CHANGELIST,
        {"action": "mark_out_of_stock", "_selected_action": [p.pk for p in products]},
        follow=True,
    )
    assert "Marked 3 product(s) out of stock. (no History entries: more than 2 products" in (
        response.content.decode()
    )
    assert set(Product.objects.values_list("quantity", flat=True)) == {0}
    assert not LogEntry.objects.exists()


@pytest.mark.django_db
def test_an_action_on_more_rows_than_the_field_limit_explains_itself(admin_client, make_product, settings):
    # Deleting ~1,100 selected products: the confirmation posts one field
    # per product, past DATA_UPLOAD_MAX_NUMBER_FIELDS, and Django's page
    # said only "Bad Request (400)".
    product = make_product(name="Mug")
    fields = {"action": "delete_selected", "post": "yes", "_selected_action": [str(product.pk)] * 1001}
    response = admin_client.post("/admin/products/product/", fields)
    assert response.status_code == 400
    page = response.content.decode()
    assert f"at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS}" in page
    assert "act on fewer rows at once" in page and 'href="/admin/products/product/"' in page
    assert Product.objects.filter(name="Mug").exists()


def _confirmation_form(page: str) -> list[tuple[str, str]]:
    """The hidden fields the confirmation page's form posts, as a browser would send them."""
    import re

    form = page[page.index('<form method="post">') :]
    return re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form[: form.index("</form>")])


@pytest.mark.django_db(transaction=True)
def test_deleting_all_of_a_long_filtered_list_is_confirmed_in_one_small_form(admin_client):
    # "Select all 1,200 products", then "Delete selected": Django's page listed
    # all 1,200 and posted 1,200 ids back, past the 1,000-field limit (400).
    Product.objects.bulk_create(Product(name=f"Bulk {i:04}", price="1.00") for i in range(1200))
    keep = Product.objects.create(name="Keep", price="1.00")
    assert cache.get_product("Bulk 0001", product_json).hit is False  # now cached
    url = CHANGELIST + "?q=Bulk"
    page_ids = list(Product.objects.filter(name__startswith="Bulk").values_list("pk", flat=True)[:100])
    asked = admin_client.post(
        url, {"action": "delete_selected", "select_across": "1", "index": "0", "_selected_action": page_ids}
    )
    page = asked.content.decode()
    assert asked.status_code == 200 and "Are you sure" in page
    assert "… and 1,100 more" in page and page.count("<li>") < 150
    fields = _confirmation_form(page)
    assert ("select_across", "1") in fields and ("confirmed_count", "1200") in fields
    assert len(fields) < 200

    # The list changed meanwhile: nothing is deleted.
    late = Product.objects.create(name="Bulk late", price="1.00")
    refused = admin_client.post(url, dict_of(fields), follow=True)
    assert "The selection changed since you confirmed it (1,201 products now, 1200 confirmed)" in (
        refused.content.decode()
    )
    assert Product.objects.filter(name__startswith="Bulk").count() == 1201
    late.delete()

    done = admin_client.post(url, dict_of(fields), follow=True)
    assert "Successfully deleted 1200 products" in done.content.decode()
    assert list(Product.objects.values_list("name", flat=True)) == [keep.name]
    assert cache.get_product("Bulk 0001", product_json) is None  # invalidated, not served from the cache


def dict_of(fields: list[tuple[str, str]]) -> dict[str, list[str]]:
    posted: dict[str, list[str]] = {}
    for name, value in fields:
        posted.setdefault(name, []).append(value)
    return posted


@pytest.mark.django_db
def test_the_add_form_starts_with_the_quantity_the_api_gives_a_product_left_without_one(admin_client):
    page = admin_client.get("/admin/products/product/add/").content.decode()
    box = page[page.index('name="quantity"') - 200 : page.index('name="quantity"') + 200]
    assert 'value="0"' in box, box


def test_the_name_box_does_not_cut_names_the_rule_accepts(admin_client):
    # A maxlength of 200 counted UTF-16 units in the browser: 150 emoji were
    # cut to 100 without a word, and the shorter name was saved.
    page = admin_client.get("/admin/products/product/add/").content.decode()
    box = page[page.index('name="name"') - 200 : page.index('name="name"') + 200]
    assert "maxlength" not in box, box
    name = "Tag " + "\U0001f600" * 150
    saved = admin_client.post(
        "/admin/products/product/add/", {"name": name, "price": "1.00", "quantity": "1"}
    )
    assert saved.status_code == 302
    assert Product.objects.get().name == name


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/admin/logout/", "/api-auth/logout/"])
def test_opening_a_logout_url_offers_a_button_that_logs_out(client, url):
    # Django logs out on POST only, and answered a GET (a bookmark, a typed
    # address) with an empty 405 that Chromium shows as "This page isn't working".
    User.objects.create_superuser("boss", password="pw-boss-123")
    client.login(username="boss", password="pw-boss-123")
    page = client.get(url)
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    text = page.content.decode()
    assert "Log out?" in text and "boss" in text and f'<form method="post" action="{url}">' in text
    assert client.get("/admin/").status_code == 200  # still logged in: a GET changes nothing
    token = text.split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
    csrf_client = client.__class__(enforce_csrf_checks=True)
    csrf_client.cookies = client.cookies
    done = csrf_client.post(url, {"csrfmiddlewaretoken": token})
    assert done.status_code in (200, 302)
    assert client.get("/admin/").status_code == 302  # logged out: the login page
    again = client.get("/api-auth/logout/")
    assert again.status_code == 200 and "You are not logged in." in again.content.decode()
