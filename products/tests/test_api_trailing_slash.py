"""A write to a URL without its trailing slash is applied (308) or refused, never lost."""

from __future__ import annotations

import pytest
import requests

from products.models import Product


@pytest.fixture
def auth(editor_token) -> dict[str, str]:
    return {"Authorization": f"Token {editor_token}"}


def test_patch_without_slash_followed_like_httpie_applies_the_change(live_server, make_product, auth):
    make_product("Mug", price="5.00", quantity=7)
    # requests follows redirects as HTTPie does (HTTPie is built on it).
    response = requests.patch(
        f"{live_server.url}/api/products/Mug", json={"price": "6.50"}, headers=auth, timeout=10
    )
    assert [r.status_code for r in response.history] == [308]
    assert response.status_code == 200, response.text
    assert response.json()["price"] == "6.50"
    product = Product.objects.get(name="Mug")
    assert (str(product.price), product.quantity) == ("6.50", 7)


def test_post_put_and_delete_without_slash_are_applied(live_server, make_product, auth):
    base = f"{live_server.url}/api/products"
    created = requests.post(
        base, json={"name": "Bowl", "price": "3.00", "quantity": 2}, headers=auth, timeout=10
    )
    assert created.status_code == 201 and [r.status_code for r in created.history] == [308]
    replaced = requests.put(
        f"{base}/Bowl", json={"name": "Bowl", "price": "4.00", "quantity": 3}, headers=auth, timeout=10
    )
    assert replaced.status_code == 200 and replaced.json()["quantity"] == 3
    stock = requests.post(f"{base}/Bowl/stock", json={"delta": 2}, headers=auth, timeout=10)
    assert stock.status_code == 200 and stock.json()["quantity"] == 5
    deleted = requests.delete(f"{base}/Bowl", headers=auth, timeout=10)
    assert deleted.status_code == 204
    assert not Product.objects.filter(name="Bowl").exists()


def test_unfollowed_redirect_says_where_and_writes_nothing(live_server, make_product, auth):
    make_product("Mug", price="5.00", quantity=7)
    response = requests.patch(
        f"{live_server.url}/api/products/Mug?x=1",
        json={"price": "6.50"},
        headers=auth,
        timeout=10,
        allow_redirects=False,
    )
    assert response.status_code == 308
    assert response.headers["Location"] == "/api/products/Mug/?x=1"
    assert "slash" in response.json()["detail"]
    assert str(Product.objects.get(name="Mug").price) == "5.00"


def test_reads_keep_the_ordinary_permanent_redirect(client):
    response = client.get("/api/products")
    assert response.status_code == 301 and response["Location"] == "/api/products/"


def test_debug_answers_308_instead_of_raising(client, settings, editor_token):
    # Django's own middleware raises RuntimeError here under DEBUG (a 500).
    settings.DEBUG = True
    response = client.post(
        "/api/products",
        {"name": "Cup", "price": "1.00"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {editor_token}",
    )
    assert response.status_code == 308 and response["Location"] == "/api/products/"
    assert not Product.objects.filter(name="Cup").exists()


def test_legacy_routes_without_slash_are_not_redirected(client, make_product):
    make_product("Mug")
    assert client.get("/products/Mug").status_code == 200


@pytest.mark.parametrize("name", [".", ".."])
def test_a_dot_name_without_slash_is_redirected_to_itself(client, make_product, editor_token, name):
    # Sent as %2E, decoded by Django: a bare "." or ".." segment in Location
    # would send the client to the list or the API root. (The test client
    # sends paths as given; python-requests would turn %2E back into a dot.)
    make_product(name, price="5.00", quantity=7)
    path = f"/api/products/{'%2E' * len(name)}"
    read = client.get(path)
    assert read.status_code == 301 and read["Location"] == path + "/"
    followed = client.get(read["Location"])
    assert followed.status_code == 200 and followed.json()["name"] == name
    auth = {"HTTP_AUTHORIZATION": f"Token {editor_token}"}
    patch = client.patch(path + "?x=1", {"price": "6.50"}, content_type="application/json", **auth)
    assert patch.status_code == 308 and patch["Location"] == path + "/?x=1"
    patched = client.patch(patch["Location"], {"price": "6.50"}, content_type="application/json", **auth)
    assert patched.status_code == 200 and patched.json()["name"] == name
    assert str(Product.objects.get(name=name).price) == "6.50"
