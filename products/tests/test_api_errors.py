"""Errors under the API are JSON with the right status, never a traceback or a 500."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from products import views

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/nope/", "/api/products/a/b/c/", "/products/", "/api/products/x%00y/"])
def test_unknown_api_url_is_json_404(anon_client, path):
    response = anon_client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_unknown_page_outside_the_api_stays_html(anon_client):
    response = anon_client.get("/nowhere/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    "method, path",
    [("delete", "/api/products/"), ("put", "/products"), ("post", "/health/"), ("post", "/products/x")],
)
def test_wrong_method_is_json_405_with_allow(editor_client, method, path):
    response = getattr(editor_client, method)(path)
    assert response.status_code == 405
    assert response.json()["detail"]
    assert response["Allow"]


def test_uncaught_exception_is_json_500_without_traceback(monkeypatch, settings):
    settings.DEBUG = False

    def broken(name):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(views, "product_json", broken)
    client = APIClient(raise_request_exception=False)
    response = client.get("/api/products/anything/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Internal server error."}
    assert b"secret internals" not in response.content and b"Traceback" not in response.content


@pytest.mark.parametrize("path", ["/api/products/", "/products"])
def test_body_over_the_limit_is_413_json(editor_client, settings, path):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = '{"name": "big", "price": "1.00", "pad": "' + "x" * 2000 + '"}'
    response = editor_client.post(path, body, content_type="application/json")
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]


def test_body_under_the_limit_is_accepted(editor_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = editor_client.post("/api/products/", {"name": "small", "price": "1.00"}, format="json")
    assert response.status_code == 201


@pytest.mark.parametrize("path", ["/api/products/", "/products", "/api/products/x/stock/"])
def test_wrong_content_type_is_415(editor_client, make_product, path):
    make_product("x")
    response = editor_client.post(path, "name=x", content_type="text/plain")
    assert response.status_code == 415
    assert "Unsupported media type" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "a", "price": ',
        "[1, 2]",
        '"text"',
        "null",
        "\xff\xfe",
        '{"name": 123, "price": "1"}',
        '{"name": "a", "price": [1]}',
    ],
)
def test_malformed_or_mistyped_json_is_400(editor_client, body):
    response = editor_client.post("/api/products/", body, content_type="application/json")
    assert response.status_code == 400
    assert isinstance(response.json(), dict)


def test_stock_beyond_the_maximum_is_a_409(editor_client, make_product):
    make_product("full", quantity=2_147_483_000)
    response = editor_client.post("/api/products/full/stock/", {"delta": 1000}, format="json")
    assert response.status_code == 409
    assert "maximum" in response.json()["detail"]
