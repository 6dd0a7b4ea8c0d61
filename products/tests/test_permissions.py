"""Who may do what: anyone reads; writes need the matching model permission."""

import base64

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from products.models import Product

from .support.users import token_client

pytestmark = pytest.mark.django_db

WRITES = [
    ("post", "/api/products/", {"name": "New", "price": "1.00"}, "add_product", 201),
    ("put", "/api/products/Mug/", {"name": "Mug", "price": "2.00", "quantity": 1}, "change_product", 200),
    ("patch", "/api/products/Mug/", {"price": "2.00"}, "change_product", 200),
    ("delete", "/api/products/Mug/", None, "delete_product", 204),
    ("post", "/api/products/Mug/stock/", {"delta": 1}, "change_product", 200),
    ("post", "/products", {"name": "New", "price": 1, "quantity": 1}, "add_product", 201),
]
IDS = ["create", "put", "patch", "delete", "stock", "legacy_create"]


@pytest.fixture(autouse=True)
def mug(make_product):
    return make_product("Mug", price="1.00", quantity=1)


def _call(client, method, url, data):
    return (
        getattr(client, method)(url, data, format="json")
        if data is not None
        else getattr(client, method)(url)
    )


def _snapshot():
    return sorted(Product.objects.values_list("name", "price", "quantity"))


@pytest.mark.parametrize("method, url, data, perm, ok", WRITES, ids=IDS)
def test_anonymous_write_is_401_and_changes_nothing(anon_client, method, url, data, perm, ok):
    before = _snapshot()
    response = _call(anon_client, method, url, data)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert _snapshot() == before


@pytest.mark.parametrize("method, url, data, perm, ok", WRITES, ids=IDS)
def test_user_without_permission_is_403_and_changes_nothing(plain_client, method, url, data, perm, ok):
    before = _snapshot()
    response = _call(plain_client, method, url, data)
    assert response.status_code == 403
    assert _snapshot() == before


@pytest.mark.parametrize("method, url, data, perm, ok", WRITES, ids=IDS)
def test_user_with_only_the_matching_permission_may_write(method, url, data, perm, ok):
    user = User.objects.create_user("holder", password="pw")
    user.user_permissions.set(Permission.objects.filter(codename=perm))
    response = _call(token_client(user), method, url, data)
    assert response.status_code == ok, response.content


@pytest.mark.parametrize("perm", ["add_product", "delete_product"])
def test_other_permissions_do_not_allow_a_change(perm):
    user = User.objects.create_user("holder", password="pw")
    user.user_permissions.set(Permission.objects.filter(codename=perm))
    response = token_client(user).patch("/api/products/Mug/", {"price": "9.00"}, format="json")
    assert response.status_code == 403


@pytest.mark.parametrize("url", ["/api/products/", "/api/products/Mug/", "/products/Mug", "/health/"])
def test_anyone_may_read(anon_client, url):
    assert anon_client.get(url).status_code == 200


def test_basic_auth_writes(editor):
    client = APIClient()
    credentials = base64.b64encode(b"editor:pw-editor").decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {credentials}")
    assert client.patch("/api/products/Mug/", {"quantity": 9}, format="json").status_code == 200
    assert Product.objects.get(name="Mug").quantity == 9


def test_session_auth_writes_with_csrf(editor):
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="editor", password="pw-editor")
    # Without the CSRF token a session write is refused...
    assert client.patch("/api/products/Mug/", {"quantity": 9}, format="json").status_code == 403
    # ...and with it, allowed.
    client.get("/api-auth/login/")
    token = client.cookies["csrftoken"].value
    response = client.patch("/api/products/Mug/", {"quantity": 9}, format="json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200
    assert Product.objects.get(name="Mug").quantity == 9


def test_bad_token_is_401(anon_client):
    anon_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert anon_client.get("/api/products/").status_code == 401
