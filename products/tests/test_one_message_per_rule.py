"""Unknown fields answer 400 naming them; one rule gives one message in the API, the admin and the import."""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from products import validators
from products.models import Product

pytestmark = pytest.mark.django_db

UNKNOWN = validators.unknown_field_message()


@pytest.mark.parametrize(
    "body, fields",
    [
        ({"name": "Mug", "price": "1.00", "colour": "red"}, ["colour"]),
        ({"name": "Mug", "price": "1.00", "id": 9999}, ["id"]),
        (
            {"name": "Mug", "price": "1.00", "created_at": "2020-01-01T00:00:00Z", "quantitiy": 3},
            ["created_at", "quantitiy"],
        ),
    ],
)
@pytest.mark.parametrize("url", ["/api/products/", "/products"], ids=["api", "legacy_route"])
def test_unknown_or_read_only_fields_answer_400_naming_them(editor_client, body, fields, url):
    response = editor_client.post(url, body, format="json")
    assert response.status_code == 400
    assert response.json() == {field: [UNKNOWN] for field in fields}
    assert not Product.objects.exists()


def test_unknown_fields_are_refused_on_update_and_stock_too(editor_client, make_product):
    make_product("Mug")
    assert editor_client.patch("/api/products/Mug/", {"colour": "red"}, format="json").json() == {
        "colour": [UNKNOWN]
    }
    assert editor_client.put(
        "/api/products/Mug/", {"name": "Mug", "price": "1.00", "id": 1}, format="json"
    ).json() == {"id": [UNKNOWN]}
    stock = editor_client.post("/api/products/Mug/stock/", {"delta": 1, "reason": "x"}, format="json")
    assert stock.status_code == 400
    assert stock.json() == {"reason": [validators.unknown_field_message(("delta",))]}


def test_a_form_post_from_the_browsable_api_is_not_refused_for_its_csrf_field(editor_client):
    response = editor_client.post(
        "/api/products/", {"name": "Mug", "price": "1.00", "csrfmiddlewaretoken": "x"}
    )
    assert response.status_code == 201


# One value, three entrances, one message.
CASES = [
    ("price", {"price": "1.001"}, "Price must have at most 2 decimal places."),
    ("price", {"price": "-1"}, "Price must be greater than or equal to 0."),
    ("price", {"price": "12345678901"}, "Price must have at most 10 digits before the decimal point."),
    ("price", {"price": "abc"}, "Price must be a number."),
    ("quantity", {"quantity": "-1"}, "Quantity must be greater than or equal to 0."),
    ("quantity", {"quantity": "1.5"}, "Quantity must be an integer."),
    ("name", {"name": "x" * 201}, "Name must be at most 200 characters (it has 201)."),
    ("name", {"name": "a/b"}, 'Name must not contain "/".'),
    ("name", {"name": "   "}, validators.BLANK_NAME_MESSAGE),
]


@pytest.fixture
def admin_browser() -> Client:
    User.objects.create_superuser("boss", password="pw-boss-123")
    browser = Client()
    browser.login(username="boss", password="pw-boss-123")
    return browser


@pytest.mark.parametrize("field, change, message", CASES, ids=[c[2][:40] for c in CASES])
def test_the_api_the_admin_and_the_import_say_the_same(
    editor_client, admin_browser, tmp_path, field, change, message
):
    values = {"name": "Mug", "price": "1.00", "quantity": "1", **change}
    api = editor_client.post("/api/products/", values, format="json")
    assert api.status_code == 400
    assert api.json() == {field: [message]}  # one message, not two saying the same

    page = admin_browser.post("/admin/products/product/add/", values)
    assert page.status_code == 200
    assert list(page.context["adminform"].form.errors[field]) == [message]

    path = tmp_path / "p.csv"
    path.write_text(
        "name,price,quantity\n" + ",".join(values[k] for k in ("name", "price", "quantity")) + "\n"
    )
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_products", str(path), stdout=io.StringIO(), stderr=err)
    assert f"line 2: {field}: {message}" in err.getvalue()


def test_a_taken_name_reads_the_same_in_the_api_and_the_admin(editor_client, admin_browser, make_product):
    make_product("Mug")
    api = editor_client.post("/api/products/", {"name": "Mug", "price": "1.00"}, format="json")
    assert api.json() == {"name": [validators.DUPLICATE_NAME_MESSAGE]}
    page = admin_browser.post(
        "/admin/products/product/add/", {"name": "Mug", "price": "1.00", "quantity": "1"}
    )
    assert list(page.context["adminform"].form.errors["name"]) == [validators.DUPLICATE_NAME_MESSAGE]


def test_the_import_names_unknown_columns_and_keys_with_the_same_message(tmp_path):
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("name,price,colour\nMug,1.00,red\n")
    with pytest.raises(CommandError) as raised:
        call_command("import_products", str(csv_file), stdout=io.StringIO(), stderr=io.StringIO())
    assert f"line 1: colour: {UNKNOWN.rstrip('.')}" in str(raised.value)

    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"name": "Mug", "price": "1.00", "id": 9999}\n')
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_products", str(jsonl), stdout=io.StringIO(), stderr=err)
    assert f"line 1: id: {UNKNOWN.rstrip('.')}" in err.getvalue()


def test_the_admin_still_saves_a_good_product(admin_browser):
    response = admin_browser.post(
        "/admin/products/product/add/", {"name": "Mug", "price": "19.99", "quantity": "3"}
    )
    assert response.status_code == 302
    mug = Product.objects.get(name="Mug")
    assert (str(mug.price), mug.quantity) == ("19.99", 3)


def test_a_name_too_long_as_sent_is_refused_even_if_trimming_would_fit(editor_client):
    response = editor_client.post("/api/products/", {"name": " " + "x" * 200, "price": "1.00"}, format="json")
    assert response.json() == {"name": ["Name must be at most 200 characters (it has 201)."]}


@pytest.mark.parametrize(
    "name, message",
    [
        ("", validators.BLANK_NAME_MESSAGE),
        ("N\x00", "Name must not contain control characters."),
        ("N\ud800", "Surrogate characters are not allowed: U+D800."),
    ],
    ids=["blank", "nul", "lone_surrogate"],
)
@pytest.mark.parametrize("url", ["/api/products/", "/products"], ids=["api", "legacy_route"])
def test_a_name_rule_that_drf_also_checks_still_says_it_once(editor_client, url, name, message):
    body = json.dumps({"name": name, "price": "1.00"})  # ASCII: a lone surrogate as "\\ud800"
    response = editor_client.post(url, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"name": [message]}


def test_an_empty_name_in_the_admin_reads_as_the_blank_rule(admin_browser):
    page = admin_browser.post("/admin/products/product/add/", {"name": "", "price": "1.00", "quantity": "1"})
    assert list(page.context["adminform"].form.errors["name"]) == [validators.BLANK_NAME_MESSAGE]


@pytest.mark.parametrize(
    "row, field, message",
    [
        ({"name": "Mug", "price": None}, "price", "This field may not be null."),
        ({"name": "Mug", "price": "1.00", "quantity": None}, "quantity", "This field may not be null."),
        ({"name": "Mug"}, "price", "This field is required."),
        ({"price": "1.00"}, "name", "This field is required."),
    ],
)
def test_a_null_or_missing_value_reads_the_same_in_the_api_and_the_import(
    editor_client, tmp_path, row, field, message
):
    # A review found "Price must be a number." and "missing field(s): price" in
    # the import where the API said DRF's words.
    api = editor_client.post("/api/products/", row, format="json")
    assert api.status_code == 400 and api.json() == {field: [message]}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(row) + "\n")
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_products", str(path), stdout=io.StringIO(), stderr=err)
    assert f"line 1: {field}: {message}\n" in err.getvalue()
    assert not Product.objects.exists()
