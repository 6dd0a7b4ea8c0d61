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


@pytest.mark.parametrize("accept", [None, "*/*", "text/html,application/xhtml+xml,*/*;q=0.8"])
def test_unknown_page_outside_the_api_stays_html_for_a_browser(anon_client, accept):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    response = anon_client.get("/nowhere/", **headers)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/nowhere/", "//api/products/", "/metrics/", "/static/nope.js"])
@pytest.mark.parametrize("accept", ["application/json", "application/json, text/plain, */*"])
def test_unknown_page_outside_the_api_is_json_for_a_client_that_asks_for_json(anon_client, path, accept):
    # SPEC: errors are JSON with the DRF shape; a REST client that strays
    # outside /api/ (a typo, a doubled slash) got Django's HTML page.
    response = anon_client.get(path, HTTP_ACCEPT=accept)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_an_oversized_body_outside_the_api_is_json_for_a_json_client(anon_client, settings):
    body = b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = anon_client.post(
        "/nowhere/", body, content_type="application/json", HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert "too large" in response.json()["detail"]


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


# What the security middlewares give every page; an answer made before them has them too.
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("text/html; q=1.0, */*", "text/html"),  # the browsable API's forms (DRF's ajax-form.js)
        ("*/*", "application/json"),  # curl
        ("application/json", "application/json"),
    ],
)
def test_a_body_over_the_limit_answers_the_page_the_client_can_show(
    editor_client, settings, accept, content_type
):
    # The browsable API's forms show an HTML answer and reload the page for
    # any other: a JSON 413 left "HTTP 200 OK" and the old product on screen.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = '{"name": "' + "z" * 2000 + '"}'
    response = editor_client.patch(
        "/api/products/x/", body, content_type="application/json", HTTP_ACCEPT=accept
    )
    assert response.status_code == 413
    assert response["Content-Type"].startswith(content_type)
    assert b"too large" in response.content
    for header, value in SECURITY_HEADERS.items():
        assert response[header] == value, header


def test_a_refused_nul_has_the_security_headers_of_every_page(client):
    for path in ("/admin/?q=%00", "/api/products/?search=%00", "/nope%00"):
        response = client.get(path)
        assert response.status_code in (400, 404), path
        for header, value in SECURITY_HEADERS.items():
            assert response[header] == value, (path, header)


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


@pytest.mark.parametrize(
    "method, path, headers, status",
    [
        ("get", "/api/schema/?format=xml", {}, 404),
        ("post", "/api/schema/", {}, 405),
        ("get", "/api/schema/", {"HTTP_ACCEPT": "text/html"}, 406),
        ("post", "/api/docs/", {"HTTP_ACCEPT": "application/json"}, 405),
        ("delete", "/api/redoc/", {}, 405),
    ],
)
def test_schema_and_docs_pages_answer_errors_as_json(anon_client, method, path, headers, status):
    # drf-spectacular renders its views' errors as YAML or HTML (an HTML 406
    # for a POST to the docs); under /api/ every error is DRF's JSON.
    response = getattr(anon_client, method)(path, **headers)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"detail"}
    if status == 405:
        assert "GET" in response["Allow"]


def test_schema_and_docs_pages_still_serve_what_they_serve(anon_client):
    assert anon_client.get("/api/schema/")["Content-Type"].startswith("application/vnd.oai.openapi")
    assert anon_client.get("/api/schema/?format=json").json()["openapi"].startswith("3.")
    assert anon_client.get("/api/docs/")["Content-Type"].startswith("text/html")
    assert anon_client.get("/api/redoc/")["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/health/live/", "/health/ready/"])
def test_probes_answer_other_methods_with_json_405_not_a_csrf_page(path):
    client = APIClient(enforce_csrf_checks=True)
    for method in ("post", "put", "delete"):
        response = getattr(client, method)(path, HTTP_ACCEPT="application/json")
        assert response.status_code == 405, (method, response.content[:80])
        assert response.json()["detail"] and "GET" in response["Allow"]
    assert client.head(path).status_code == 200
    assert client.get(path).status_code == 200
    described = client.options(path, HTTP_ACCEPT="application/json").json()
    assert described["name"] in ("Liveness Probe", "Readiness Probe")  # not "  Live" from a private class
    assert described["description"].startswith(described["name"].split()[0] + ":")


def test_a_create_race_lost_at_the_unique_index_is_a_409_logged_on_one_line(
    editor_client, make_product, monkeypatch, caplog
):
    # Two creates of one name both pass the name check; the database's unique
    # index stops the second. PostgreSQL's error adds a DETAIL line quoting
    # the name (control characters and all): the log record keeps the first line.
    from products import serializers

    make_product(name="race\u2028x", price="1.00", quantity=1)
    monkeypatch.setattr(serializers, "name_taken", lambda name, pk: False)
    with caplog.at_level("INFO", logger="products.exceptions"):
        response = editor_client.post(
            "/api/products/", {"name": "race\u2028x", "price": "2.00"}, format="json"
        )
    assert response.status_code == 409, response.content
    assert response.json() == {"name": ["A product with this name already exists."]}
    [record] = [r for r in caplog.records if "Integrity error" in r.getMessage()]
    assert "\n" not in record.getMessage()
    assert "\u2028" not in record.getMessage()


def test_the_favicon_is_served(anon_client):
    # Browsers ask every site for /favicon.ico: a 404 was an error in each page's console.
    icon = anon_client.get("/favicon.ico")
    assert icon.status_code == 200 and icon["Content-Type"] == "image/png"
    assert icon.content.startswith(b"\x89PNG")
    assert anon_client.post("/favicon.ico").status_code in (403, 405)


@pytest.mark.parametrize(
    ("method", "detail"),
    [
        ("GET", "Another write holds this data; try again shortly."),
        ("PATCH", "Another write holds this data; nothing changed, try again shortly."),
    ],
)
def test_a_lock_waited_out_says_nothing_changed_only_to_a_write(method, detail):
    from django.db import OperationalError
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from products.exceptions import api_exception_handler

    request = Request(APIRequestFactory().generic(method, "/api/products/Mug/"))
    response = api_exception_handler(OperationalError("database is locked"), {"request": request})
    assert response.status_code == 503 and response.data == {"detail": detail}


def test_under_a_path_prefix_the_api_errors_stay_json(anon_client, editor_client):
    # docs/security.md: a deployment under a path prefix sets SCRIPT_NAME.
    # The API's paths were recognised by request.path, which carries the
    # prefix, so its errors came out as Django's text and HTML pages.
    prefix = {"SCRIPT_NAME": "/shop"}
    refused = anon_client.get("/api/products/?search=%00", **prefix)
    assert refused.status_code == 400
    assert refused["Content-Type"] == "application/json"
    missing = anon_client.get("/api/nope/", **prefix)
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not found."})
    moved = editor_client.post("/api/products", {"name": "x", "price": "1.00"}, format="json", **prefix)
    assert moved.status_code == 308
    assert moved["Location"] == "/shop/api/products/"
    assert "slash" in moved.json()["detail"]
