"""The products API as a REST client uses it."""

from urllib.parse import quote

import pytest

from products.models import Product

pytestmark = pytest.mark.django_db

URL = "/api/products/"


def detail(name: str) -> str:
    return f"{URL}{quote(name, safe='')}/"


def test_create_answers_201_with_location_and_string_price(editor_client):
    response = editor_client.post(URL, {"name": "  Blue mug ", "price": 12.5, "quantity": 3}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "Blue mug"
    assert body["price"] == "12.50"
    assert body["quantity"] == 3
    assert set(body) == {"id", "name", "price", "quantity", "created_at", "updated_at"}
    assert response["Location"].endswith("/api/products/Blue%20mug/")
    assert Product.objects.get(name="Blue mug").quantity == 3


def test_price_accepted_as_string_and_returned_as_string(editor_client):
    response = editor_client.post(URL, {"name": "Lamp", "price": "0.10"}, format="json")
    assert response.status_code == 201
    assert response.json()["price"] == "0.10"
    assert response.json()["quantity"] == 0


@pytest.mark.parametrize(
    "name",
    ["with space", "dots.in.name", "ünïcødé ☕", "q?mark", "hash#tag", "100%", "a+b", "x&y=z", "name.json"],
)
def test_awkward_names_round_trip_percent_encoded(editor_client, anon_client, name):
    assert editor_client.post(URL, {"name": name, "price": "1.00"}, format="json").status_code == 201
    response = anon_client.get(detail(name))
    assert response.status_code == 200, response.content
    assert response.json()["name"] == name
    assert editor_client.patch(detail(name), {"quantity": 4}, format="json").status_code == 200
    assert anon_client.get(detail(name)).json()["quantity"] == 4
    assert editor_client.delete(detail(name)).status_code == 204
    assert anon_client.get(detail(name)).status_code == 404


def test_list_is_paginated_and_ordered_by_name(editor_client, anon_client, make_product):
    for name in ["c", "a", "b"]:
        make_product(name)
    body = anon_client.get(URL, {"page_size": 2}).json()
    assert [p["name"] for p in body["results"]] == ["a", "b"]
    assert body["next"]
    rest = anon_client.get(body["next"]).json()
    assert [p["name"] for p in rest["results"]] == ["c"]


def test_put_replaces_and_patch_renames(editor_client, anon_client, make_product):
    make_product("Old", price="1.00", quantity=1)
    put = editor_client.put(detail("Old"), {"name": "Old", "price": "2.00", "quantity": 7}, format="json")
    assert put.status_code == 200
    assert put.json()["price"] == "2.00"
    patch = editor_client.patch(detail("Old"), {"name": "New"}, format="json")
    assert patch.status_code == 200
    assert anon_client.get(detail("Old")).status_code == 404
    assert anon_client.get(detail("New")).json()["quantity"] == 7


def test_unknown_product_is_404_json(anon_client, editor_client):
    for response in (
        anon_client.get(detail("nope")),
        editor_client.patch(detail("nope"), {"quantity": 1}, format="json"),
        editor_client.delete(detail("nope")),
        editor_client.post(detail("nope") + "stock/", {"delta": 1}, format="json"),
    ):
        assert response.status_code == 404
        assert "detail" in response.json()


def test_duplicate_name_is_409(editor_client, make_product):
    make_product("Mug")
    response = editor_client.post(URL, {"name": " Mug ", "price": "1.00"}, format="json")
    assert response.status_code == 409
    assert "name" in response.json()
    assert Product.objects.count() == 1


def test_rename_onto_existing_name_is_409_and_changes_nothing(editor_client, make_product):
    make_product("A", price="1.00")
    make_product("B", price="2.00")
    response = editor_client.patch(detail("A"), {"name": "B"}, format="json")
    assert response.status_code == 409
    assert sorted(Product.objects.values_list("name", flat=True)) == ["A", "B"]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"name": "x", "price": -1}, "price"),
        ({"name": "x", "price": "1.999"}, "price"),
        ({"name": "x", "price": "abc"}, "price"),
        ({"name": "x", "price": True}, "price"),
        ({"name": "x", "price": "12345678901.00"}, "price"),
        ({"name": "x", "price": 1, "quantity": -1}, "quantity"),
        ({"name": "x", "price": 1, "quantity": 1.5}, "quantity"),
        ({"name": "x", "price": 1, "quantity": "many"}, "quantity"),
        ({"name": "x", "price": 1, "quantity": 2**40}, "quantity"),
        ({"name": "a/b", "price": 1}, "name"),
        ({"name": "   ", "price": 1}, "name"),
        ({"name": "x" * 201, "price": 1}, "name"),
        ({"name": "bell\x07", "price": 1}, "name"),
        ({"name": ["x"], "price": 1}, "name"),
        ({"price": 1}, "name"),
        ({"name": "x"}, "price"),
    ],
)
def test_bad_input_is_400_with_field_message(editor_client, payload, field):
    response = editor_client.post(URL, payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert isinstance(response.json()[field], list)
    assert not Product.objects.exists()


def test_malformed_json_is_400(editor_client):
    response = editor_client.post(URL, '{"name": "x", "price":', content_type="application/json")
    assert response.status_code == 400
    assert "detail" in response.json()


def test_json_that_is_not_an_object_is_400(editor_client):
    response = editor_client.post(URL, "[1, 2]", content_type="application/json")
    assert response.status_code == 400


def test_wrong_content_type_is_415(editor_client):
    response = editor_client.post(URL, "name=x", content_type="text/plain")
    assert response.status_code == 415


def test_method_not_allowed_is_405(editor_client, make_product):
    make_product("Mug")
    assert editor_client.put(URL, {}, format="json").status_code == 405
    assert editor_client.get(detail("Mug") + "stock/").status_code == 405


def test_stock_adds_and_refuses_to_go_negative(editor_client, anon_client, make_product):
    make_product("Mug", quantity=2)
    response = editor_client.post(detail("Mug") + "stock/", {"delta": 3}, format="json")
    assert response.status_code == 200
    assert response.json()["quantity"] == 5
    refused = editor_client.post(detail("Mug") + "stock/", {"delta": -6}, format="json")
    assert refused.status_code == 409
    assert "detail" in refused.json()
    assert anon_client.get(detail("Mug")).json()["quantity"] == 5
    assert editor_client.post(detail("Mug") + "stock/", {"delta": "x"}, format="json").status_code == 400
    assert editor_client.post(detail("Mug") + "stock/", {}, format="json").status_code == 400


def test_health_reports_database_and_cache(anon_client):
    response = anon_client.get("/health/")
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "cache": "ok"}


def test_browsable_api_detail_prefills_the_edit_form(editor_client, make_product):
    make_product("Teapot", price="24.90", quantity=12)
    response = editor_client.get("/api/products/Teapot/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["X-Cache"] in {"HIT", "MISS"}
    html = response.content.decode()
    assert 'value="Teapot"' in html and 'value="24.90"' in html


def test_browsable_api_raw_data_form_starts_from_a_body_a_put_takes(editor_client, make_product):
    import html as html_lib
    import json
    import re

    make_product("Teapot", price="24.90", quantity=12)
    page = editor_client.get("/api/products/Teapot/", HTTP_ACCEPT="text/html").content.decode()
    raw = re.search(r'<textarea name="_content"[^>]*>(.*?)</textarea>', page, re.S)
    body = json.loads(html_lib.unescape(raw.group(1)))
    assert body == {"name": "Teapot", "price": "24.90", "quantity": 12}  # no id, no timestamps
    for method in ("put", "patch"):
        sent = getattr(editor_client, method)(
            "/api/products/Teapot/", json.dumps(body), content_type="application/json"
        )
        assert sent.status_code == 200, sent.content


def test_deeply_nested_json_is_400_not_500(editor_client):
    for body in ("[" * 5000 + "]" * 5000, '{"a":' * 5000 + "1" + "}" * 5000):
        response = editor_client.post(URL, body, content_type="application/json")
        assert response.status_code == 400
        assert "detail" in response.json()


@pytest.mark.parametrize("name", [".", ".."])
def test_location_of_dot_names_points_at_the_product(editor_client, anon_client, name):
    response = editor_client.post(URL, {"name": name, "price": "1.00"}, format="json")
    assert response.status_code == 201
    assert response["Location"].endswith("/api/products/" + "%2E" * len(name) + "/")
    path = response["Location"].split("://", 1)[1].split("/", 1)[1]
    assert anon_client.get("/" + path).json()["name"] == name
    legacy = editor_client.post("/products", {"name": name + "x", "price": 1}, format="json")
    assert legacy["Location"].endswith("/products/" + name + "x")


def test_negative_zero_price_is_zero_and_its_etag_holds(editor_client, anon_client):
    created = editor_client.post(URL, {"name": "Free", "price": "-0"}, format="json")
    assert created.json()["price"] == "0.00"
    read = anon_client.get(detail("Free"))
    assert read.json()["price"] == "0.00"
    assert read["ETag"] == created["ETag"]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"name": "x", "price": "1", "quantity": True}, "quantity"),
        ({"name": "x", "price": "1", "quantity": "１"}, "quantity"),
        ({"name": "x", "price": "１２"}, "price"),
        ({"name": "x", "price": "1_000"}, "price"),
    ],
    ids=["bool_quantity", "fullwidth_quantity", "fullwidth_price", "underscore_price"],
)
def test_lookalike_numbers_are_400(editor_client, payload, field):
    response = editor_client.post(URL, payload, format="json")
    assert response.status_code == 400 and field in response.json()


@pytest.mark.parametrize("delta", [True, 1.5, "1.5", "1e0", "１", None, "9" * 5000, -(10**30)])
def test_stock_delta_must_be_an_integer(editor_client, make_product, delta):
    make_product("Mug", quantity=3)
    response = editor_client.post(detail("Mug") + "stock/", {"delta": delta}, format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["delta"]
    assert Product.objects.get(name="Mug").quantity == 3


@pytest.mark.parametrize("body", ['{"delta": 2.0}', '{"delta": 2}', '{"delta": "2"}', '{"delta": 2e0}'])
def test_stock_delta_takes_an_integer_as_a_quantity_does(editor_client, make_product, body):
    # One rule for both (validators.integer_value): a JSON number with an
    # integral value is that integer, as a quantity of 2.0 is 2.
    make_product("Mug", quantity=3)
    response = editor_client.post(detail("Mug") + "stock/", body, content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.json()["quantity"] == 5
    created = editor_client.post(
        URL, '{"name": "Cup", "price": "1", "quantity": 2.0}', content_type="application/json"
    )
    assert created.status_code == 201 and created.json()["quantity"] == 2


def test_search_is_case_insensitive_beyond_ascii(anon_client, make_product):
    make_product("ünïcødé mug")
    make_product("Plain mug")
    names = lambda q: [p["name"] for p in anon_client.get(URL, {"search": q}).json()["results"]]  # noqa: E731
    assert names("ÜNÏ") == ["ünïcødé mug"]
    assert names("MUG") == ["Plain mug", "ünïcødé mug"]


def test_health_answers_head(anon_client):
    assert anon_client.head("/health/").status_code == 200


def test_not_modified_has_no_content_type(anon_client, make_product):
    make_product("Mug")
    etag = anon_client.get(detail("Mug"))["ETag"]
    response = anon_client.get(detail("Mug"), HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304
    assert "Content-Type" not in response


@pytest.mark.parametrize("query", ["search=zzz", "ordering=bad", "in_stock=maybe", "min_price=999"])
def test_a_products_page_ignores_the_lists_filters_in_json_and_html_alike(anon_client, make_product, query):
    make_product("Mug")
    json_answer = anon_client.get(f"/api/products/Mug/?{query}", HTTP_ACCEPT="application/json")
    html_answer = anon_client.get(f"/api/products/Mug/?{query}&format=api")
    assert (json_answer.status_code, html_answer.status_code) == (200, 200), html_answer.content[:300]


def test_options_describes_price_and_quantity_with_their_types_and_limits(editor_client):
    described = editor_client.options("/api/products/").json()["actions"]["POST"]
    assert described["price"] | {"label": None} == {
        "type": "decimal",
        "required": True,
        "read_only": False,
        "label": None,
        "min_value": "0.00",
        "max_value": "9999999999.99",
        "max_digits": 12,
        "decimal_places": 2,
    }
    assert described["quantity"]["type"] == "integer"
    assert (described["quantity"]["min_value"], described["quantity"]["max_value"]) == (0, 2147483647)
    assert described["name"]["type"] == "string" and described["name"]["max_length"] == 200


@pytest.mark.parametrize("method, path", [("post", "/api/products/"), ("put", "/api/products/Cup/")])
def test_browsable_api_form_keeps_its_values_and_names_a_taken_name(
    editor_client, make_product, method, path
):
    # A 400 re-renders the HTML form with what was typed and the error under
    # the field; the 409 for a taken name cleared the form and said nothing there.
    make_product("Teapot", price="24.90", quantity=12)
    make_product("Cup", price="3.00", quantity=1)
    response = getattr(editor_client, method)(
        path,
        {"name": "Teapot", "price": "7.77", "quantity": "5"},
        format="multipart",
        HTTP_ACCEPT="text/html",
    )
    assert response.status_code == 409
    html = response.content.decode()
    form = html[html.index('id="post-object-form"' if method == "post" else 'id="put-object-form"') :]
    assert 'value="7.77"' in form
    assert "A product with this name already exists." in form.split("</form>")[0]
