"""The admin's product import: dry run first, nothing written before the confirmation, all or nothing."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, connection

from products import cache
from products.models import Product
from products.selectors import product_json

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/products/product/"
IMPORT = "/admin/products/product/import/"
GOOD = b"name,price,quantity\nMug,3.50,4\nBowl,12.00,0\nLamp,20.00,2\n"
BAD = b"name,price,quantity\nMug,3.50,4\nBowl,-1,0\nLamp,20.00,lots\n"


def staff(client, *codenames: str) -> User:
    user = User.objects.create_user("clerk", password="pw-clerk", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return user


def upload(client, content: bytes, name: str = "products.csv", **extra):
    return client.post(IMPORT, {"file": SimpleUploadedFile(name, content), **extra})


def catalogue() -> set[tuple[str, Decimal, int]]:
    return set(Product.objects.values_list("name", "price", "quantity"))


def test_import_button_and_page_need_add_and_change_permissions(client):
    staff(client, "view_product", "change_product")
    assert b"Import</a>" not in client.get(CHANGELIST).content
    assert client.get(IMPORT).status_code == 403
    User.objects.get().user_permissions.add(Permission.objects.get(codename="add_product"))
    assert b'href="/admin/products/product/import/"' in client.get(CHANGELIST).content
    assert client.get(IMPORT).status_code == 200


def test_dry_run_reports_counts_and_writes_nothing_until_confirmed(client):
    staff(client, "add_product", "change_product", "view_product")
    Product.objects.create(name="Lamp", price="20.00", quantity=2)  # unchanged
    Product.objects.create(name="Bowl", price="9.00", quantity=0)  # updated
    cache.get_product("Bowl", product_json)
    before = catalogue()
    report = upload(client, GOOD)
    assert report.status_code == 200
    context = report.context
    assert (context["report"].result.created, context["report"].result.updated) == (1, 1)
    assert context["report"].result.unchanged == 1
    assert b'name="confirm"' in report.content
    assert catalogue() == before  # nothing written by the dry run

    done = client.post(IMPORT, {"confirm": "1", "token": context["token"]})
    assert done.status_code == 302 and done["Location"] == CHANGELIST
    assert catalogue() == {
        ("Mug", Decimal("3.50"), 4),
        ("Bowl", Decimal("12.00"), 0),
        ("Lamp", Decimal("20.00"), 2),
    }
    assert (
        b'"12.00"' in cache.get_product("Bowl", product_json).data
    )  # the service invalidated the cached row
    messages = [str(m) for m in client.get(CHANGELIST).context["messages"]]
    assert messages == ["Imported products.csv: created 1, updated 1, unchanged 1."]
    # The admin's history: the created and the changed product, not the unchanged one.
    from django.contrib.admin.models import ADDITION, CHANGE, LogEntry

    history = {
        (entry.object_repr, entry.action_flag, entry.change_message) for entry in LogEntry.objects.all()
    }
    assert history == {
        ("Mug", ADDITION, "Created by the import of products.csv."),
        ("Bowl", CHANGE, "Changed by the import of products.csv."),
    }
    # The token is spent: confirming again imports nothing and says so.
    again = client.post(IMPORT, {"confirm": "1", "token": context["token"]}, follow=True)
    assert "no longer waiting for confirmation" in again.content.decode()


def test_a_confirmation_after_the_catalogue_changed_shows_the_new_plan_and_writes_nothing(client):
    # The dry run said "create 2"; someone created one of them meanwhile. The
    # confirmation overwrote their product without asking.
    staff(client, "add_product", "change_product", "view_product")
    dry = upload(client, b"name,price,quantity\nRace A,1.00,1\nRace B,2.00,2\n").context
    assert (dry["report"].result.created, dry["report"].result.updated) == (2, 0)
    Product.objects.create(name="Race B", price="9.00", quantity=9)  # through the API, say

    changed = client.post(IMPORT, {"confirm": "1", "token": dry["token"]})
    assert changed.status_code == 200
    assert "changed since the dry run; nothing was written" in changed.content.decode()
    assert catalogue() == {("Race B", Decimal("9.00"), 9)}
    report = changed.context["report"].result
    assert (report.created, report.updated) == (1, 1) and changed.context["token"] != dry["token"]

    done = client.post(IMPORT, {"confirm": "1", "token": changed.context["token"]})
    assert done.status_code == 302
    assert catalogue() == {("Race A", Decimal("1.00"), 1), ("Race B", Decimal("2.00"), 2)}


def test_a_confirmation_after_equal_counts_but_other_products_changed_writes_nothing(client):
    # The dry run: create c, update d. Meanwhile someone created c and deleted
    # d: the counts are the same (update c, create d), the products are not.
    staff(client, "add_product", "change_product", "view_product")
    Product.objects.create(name="d", price="1.00", quantity=1)
    dry = upload(client, b"name,price,quantity\nc,5.00,5\nd,6.00,6\n").context
    Product.objects.create(name="c", price="77.00", quantity=7)
    Product.objects.filter(name="d").delete()
    changed = client.post(IMPORT, {"confirm": "1", "token": dry["token"]})
    assert changed.status_code == 200 and "nothing was written" in changed.content.decode()
    assert catalogue() == {("c", Decimal("77.00"), 7)}


def test_a_bad_row_is_reported_by_line_and_field_and_cannot_be_confirmed(client):
    staff(client, "add_product", "change_product")
    report = upload(client, BAD)
    errors = report.context["report"].errors
    assert errors[0].startswith("line 3: price: ") and errors[1].startswith("line 4: quantity: ")
    assert len(errors) == 2
    assert b'name="confirm"' not in report.content
    assert client.post(IMPORT, {"confirm": "1", "token": "guess"}).status_code == 302
    assert not Product.objects.exists()


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"name,price,quantity\n", "the file has no product rows"),
        (b"name,price,quantity\nLamp,20.00,2\n", "every product in the file already has these values"),
    ],
)
def test_a_file_that_would_write_nothing_says_so_and_offers_no_confirmation(client, content, expected):
    staff(client, "add_product", "change_product")
    Product.objects.create(name="Lamp", price="20.00", quantity=2)
    waiting = upload(client, GOOD).context["token"]  # an earlier upload waiting for confirmation
    report = upload(client, content)
    assert report.status_code == 200 and report.context["report"].ok
    page = report.content.decode()
    assert f"Nothing to import: {expected}." in page
    assert 'name="confirm"' not in page and "token" not in report.context
    # Nor does the earlier upload's token still confirm: the page on screen is this file's.
    assert client.post(IMPORT, {"confirm": "1", "token": waiting}).status_code == 302
    assert catalogue() == {("Lamp", Decimal("20.00"), 2)}


def test_a_json_array_report_names_the_item_as_well_as_the_line(client):
    # As import_products says it: two items on line 1 are two different rows.
    staff(client, "add_product", "change_product")
    report = upload(client, b'[{"name": "Q1", "price": "-1"}, {"name": "Q2", "price": "-2"}]', "two.json")
    errors = report.context["report"].errors
    assert [e.split(": price: ")[0] for e in errors] == ["line 1: item 1", "line 1: item 2"]
    assert not Product.objects.exists()


@pytest.mark.parametrize(
    "name, content, fmt, expected",
    [
        ("p.json", b'[{"name": "Mug", "price": "1.00"}]', "", (1, "")),
        ("p.jsonl", b'{"name": "Mug", "price": "1.00"}\n', "", (1, "")),
        ("p.txt", b'{"name": "Mug", "price": "1.00"}\n', "jsonl", (1, "")),
        ("p.csv", b"\xff\xfe", "", (None, "UTF-8")),
        ("p.csv", b"name,colour\nMug,red\n", "", (None, "column")),
    ],
)
def test_formats_and_whole_file_errors(client, name, content, fmt, expected):
    staff(client, "add_product", "change_product")
    report = upload(client, content, name, fmt=fmt).context["report"]
    created, problem = expected
    if created is not None:
        assert report.ok and report.result.created == created
    else:
        assert not report.ok and problem in report.file_error
    assert not Product.objects.exists()


def test_an_unknown_extension_or_too_large_file_is_a_form_error(client, settings):
    staff(client, "add_product", "change_product")
    assert "choose one" in upload(client, GOOD, "p.txt").content.decode()
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    assert "At most 10\xa0bytes (the request body limit)." in client.get(IMPORT).content.decode()
    too_large = client.post(IMPORT, {"file": SimpleUploadedFile("p.csv", GOOD)})
    # An HTML page in the admin, as Django's own errors there (it was the API's JSON).
    assert too_large.status_code == 413 and too_large["Content-Type"].startswith("text/html")
    assert (
        "Request body is too large" in too_large.content.decode()
        and "(limit 10)" in too_large.content.decode()
    )
    assert "At most 10\xa0bytes can be sent at once; nothing was changed." in too_large.content.decode()
    assert "A larger file imports with manage.py import_products" in too_large.content.decode()
    assert f'<a href="{IMPORT}">Back</a>' in too_large.content.decode()  # to the form, not a dead end
    assert not Product.objects.exists()


def test_an_import_past_the_history_limit_writes_its_products_and_says_history_was_skipped(
    client, monkeypatch
):
    from django.contrib.admin.models import LogEntry

    from products import admin_import

    monkeypatch.setattr(admin_import, "HISTORY_LIMIT", 1)
    staff(client, "add_product", "change_product", "view_product")
    Product.objects.create(name="Bowl", price="9.00", quantity=0)
    report = upload(client, GOOD)
    client.post(IMPORT, {"confirm": "1", "token": report.context["token"]})
    messages = [str(m) for m in client.get(CHANGELIST).context["messages"]]
    assert messages == [
        "Imported products.csv: created 2, updated 1, unchanged 0. "
        "(no History entries: more than 1 products changed at once)"
    ]
    assert ("Bowl", Decimal("12.00"), 0) in catalogue()
    assert not LogEntry.objects.exists()


@pytest.mark.slow
def test_a_product_created_while_a_confirmed_import_runs_is_never_overwritten(client):
    # The confirmation checks the dry run's plan ("create 3,000"), then
    # imports. A create that committed in between was updated by the import
    # (a review: 4 of 4 runs), its acknowledged values overwritten. A create
    # now lands before the check (the plan changed: nothing is written) or
    # after the import (the name is taken: refused). The delays spread the
    # create over the confirmation's run.
    staff(client, "add_product", "change_product", "view_product")
    rows = b"name,price,quantity\n" + b"".join(b"Row %04d,4.00,4\n" % i for i in range(3000))
    for delay in (0.05, 0.15, 0.3):
        token = upload(client, rows).context["token"]
        created: list[bool] = []

        def create_late(delay=delay, created=created) -> None:
            time.sleep(delay)
            try:
                Product.objects.create(name="Row 2990", price=Decimal("99.00"), quantity=99)
                created.append(True)
            except IntegrityError:
                created.append(False)
            finally:
                connection.close()

        late = threading.Thread(target=create_late)
        late.start()
        client.post(IMPORT, {"confirm": "1", "token": token})
        late.join(60)
        product = Product.objects.get(name="Row 2990")
        if created == [True]:  # acknowledged: the import wrote nothing
            assert (product.price, product.quantity, Product.objects.count()) == (Decimal("99.00"), 99, 1), (
                delay
            )
        else:  # imported first: the create was refused
            assert (product.price, product.quantity, Product.objects.count()) == (Decimal("4.00"), 4, 3000), (
                delay
            )
        Product.objects.all().delete()


def test_an_upload_django_cannot_read_says_why(client):
    # A file name of 1,100 characters puts its part's headers past Django's
    # limit; the page said only "Bad request (400)" (a review).
    staff(client, "add_product", "change_product")
    # By hand: the test client's upload cuts a file name to 255 characters.
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="'
        + b"p" * 1100
        + b'.csv"\r\nContent-Type: text/csv\r\n\r\nname,price\nMug,1.00\n\r\n--XyZ--\r\n'
    )
    response = client.generic("POST", IMPORT, body, content_type="multipart/form-data; boundary=XyZ")
    assert response.status_code == 400
    page = response.content.decode()
    assert "The form could not be read (" in page and "Nothing was changed." in page
    assert not Product.objects.exists()
