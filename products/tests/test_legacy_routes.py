"""The original Flask service's routes keep their exact bodies."""

import pytest

from products.models import Product

pytestmark = pytest.mark.django_db


def test_legacy_create_answers_201_with_the_original_body(editor_client):
    response = editor_client.post("/products", {"name": "Lamp", "price": 30, "quantity": 2}, format="json")
    assert response.status_code == 201
    assert response.json() == {
        "type": "Product",
        "count": 1,
        "attributes": {"name": "Lamp", "price": "30.00", "quantity": 2},
    }
    assert response["Location"].endswith("/products/Lamp")
    assert Product.objects.get(name="Lamp").quantity == 2
    # The product's ETag, as the API's create and both routes' reads send it.
    assert response["ETag"] == editor_client.get("/products/Lamp")["ETag"]
    assert response["ETag"] == editor_client.get("/api/products/Lamp/")["ETag"]


def test_legacy_read_answers_the_original_body_through_the_cache(anon_client, make_product):
    make_product("Lamp", price="19.99", quantity=3)
    first = anon_client.get("/products/Lamp")
    assert first.status_code == 200
    assert first.json() == {
        "type": "Product",
        "count": 1,
        "attributes": {"name": "Lamp", "price": "19.99", "quantity": 3},
    }
    assert first["X-Cache"] == "MISS"
    second = anon_client.get("/products/Lamp")
    assert second["X-Cache"] == "HIT"
    assert second.json() == first.json()
    # The API and the legacy route share one cache entry.
    assert anon_client.get("/api/products/Lamp/")["X-Cache"] == "HIT"


def test_legacy_read_of_unknown_name_is_404_json(anon_client):
    response = anon_client.get("/products/nothing%20here")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_legacy_create_shares_the_api_rules(editor_client, make_product):
    make_product("Lamp")
    assert (
        editor_client.post(
            "/products", {"name": "Lamp", "price": 1, "quantity": 1}, format="json"
        ).status_code
        == 409
    )
    bad = editor_client.post("/products", {"name": "Bad", "price": -1, "quantity": 1}, format="json")
    assert bad.status_code == 400
    assert "price" in bad.json()
    assert not Product.objects.filter(name="Bad").exists()


def test_legacy_read_with_percent_encoded_name(anon_client, make_product):
    make_product("Desk lamp ü")
    response = anon_client.get("/products/Desk%20lamp%20%C3%BC")
    assert response.status_code == 200
    assert response.json()["attributes"]["name"] == "Desk lamp ü"
