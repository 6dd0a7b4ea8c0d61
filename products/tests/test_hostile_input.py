"""Characters the database refuses never reach it: 400/401, never 500 (run on PostgreSQL too)."""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


ANONYMOUS = [
    ("basic_username", "/api/products/", {"HTTP_AUTHORIZATION": basic("ed\x00", "x")}, 401),
    ("basic_password", "/api/products/", {"HTTP_AUTHORIZATION": basic("ed", "x\x00")}, 401),
    ("token", "/api/products/", {"HTTP_AUTHORIZATION": "Token abc\x00def"}, 400),
    ("session_cookie", "/api/products/", {"HTTP_COOKIE": 'sessionid="abcdefgh\\000ijkl"'}, 400),
    ("search", "/api/products/?search=a%00b", {}, 400),
    ("ordering", "/api/products/?ordering=name%00", {}, 400),
    ("cursor", "/api/products/?cursor=%00", {}, 400),
    ("price_filter", "/api/products/?min_price=1%00", {}, 400),
    ("detail_name", "/api/products/a%00b/", {}, 404),
    ("legacy_detail_name", "/products/a%00b", {}, 404),
    ("if_none_match", "/api/products/Mug/", {"HTTP_IF_NONE_MATCH": '"\x00"'}, 400),
]


@pytest.mark.parametrize("url,headers,status", [c[1:] for c in ANONYMOUS], ids=[c[0] for c in ANONYMOUS])
def test_nul_from_anyone_is_bad_input_not_a_server_error(url, headers, status, make_product):
    make_product("Mug")
    response = Client(raise_request_exception=False).get(url, **headers)
    assert response.status_code == status, response.content[:300]


def test_token_of_any_length_or_alphabet_is_simply_invalid(anon_client):
    for key in ["x" * 41, "cl\xe9", "\x7f" * 8]:
        assert anon_client.get("/api/products/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 401


@pytest.mark.parametrize("url", ["/admin/login/", "/api-auth/login/"])
def test_nul_in_a_login_form_is_a_failed_login(url):
    response = Client(raise_request_exception=False).post(url, {"username": "ed\x00", "password": "x"})
    assert response.status_code == 200  # the form's error, no lookup


STAFF = [
    "/admin/products/product/?q=a%00",
    "/admin/products/product/?name__exact=%00",
    "/admin/products/product/?in_stock=%00",
    "/admin/products/product/?o=%00",
    "/admin/auth/user/?q=%00",
]


@pytest.mark.parametrize("url", STAFF)
def test_nul_in_the_admins_query_parameters_is_bad_input(url):
    User.objects.create_superuser("boss", password="pw-boss-123")
    browser = Client(raise_request_exception=False)
    browser.login(username="boss", password="pw-boss-123")
    assert browser.get(url).status_code == 400
