"""A newcomer's way in: `/` leads to the API root, which describes the service and links the docs."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

LINKED = {
    "docs": "/api/docs/",
    "redoc": "/api/redoc/",
    "schema": "/api/schema/",
    "admin": "/admin/",
    "health": "/health/",
}


def test_the_site_root_redirects_to_the_api_root(anon_client):
    response = anon_client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/api/"


def test_head_at_the_site_root_redirects_too(anon_client):
    response = anon_client.head("/")
    assert (response.status_code, response["Location"]) == (302, "/api/")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "TRACE"])
def test_another_method_at_the_site_root_is_a_405_in_json_for_a_json_client(method):
    # With CSRF checks on, as a real client meets them: an audit saw 403
    # "CSRF cookie not set" where this test (Django's test client skips the
    # check) saw 405.
    response = Client(enforce_csrf_checks=True).generic(method, "/", HTTP_ACCEPT="application/json")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD, OPTIONS"
    assert response.json() == {"detail": f'Method "{method}" not allowed.'}


def test_api_root_describes_the_service_and_links_docs_admin_and_health(anon_client):
    body = anon_client.get("/api/", HTTP_ACCEPT="application/json").json()
    assert body["service"] == "Product catalogue API"
    assert "products" in body["description"] and "create_editor" in body["description"]
    assert body["endpoints"] == {"products": "http://testserver/api/products/"}
    assert {key: link["url"] for key, link in body["links"].items()} == {
        key: "http://testserver" + path for key, path in LINKED.items()
    }
    assert all(link["description"] for link in body["links"].values())


def test_every_linked_page_answers(anon_client):
    for path in LINKED.values():
        assert anon_client.get(path).status_code in (200, 302), path  # the admin redirects to its login


def test_browsable_api_root_shows_the_description_and_links(anon_client):
    html = anon_client.get("/api/", HTTP_ACCEPT="text/html").content.decode()
    assert "Product catalogue API" in html
    assert "The default basic root view" not in html
    for path in LINKED.values():
        assert f"http://testserver{path}" in html


@pytest.mark.parametrize("url", ["/api/", "/api/products/Mug/stock/", "/products", "/products/Mug"])
def test_browsable_pages_show_their_descriptions_without_markup(anon_client, make_product, url):
    # DRF shows a view's docstring as written (Markdown is not installed).
    make_product("Mug")
    html = anon_client.get(url, HTTP_ACCEPT="text/html").content.decode()
    header = html.split('<div class="page-header">', 1)[1]
    description = header.split('<div class="pull-left">', 1)[1].split("</div>", 1)[0]
    assert "<p>" in description and "`" not in description, description


def test_breadcrumbs_keep_the_format_parameter_as_a_query_string(anon_client, make_product):
    make_product("C# book")
    html = anon_client.get("/api/products/C%23%20book/?format=api").content.decode()
    crumbs = html.split('<ul class="breadcrumb">', 1)[1].split("</ul>", 1)[0]
    assert 'href="/api/?format=api"' in crumbs, crumbs
    assert 'href="/api/products/?format=api"' in crumbs
    assert 'href="/api/products/C%23%20book/?format=api"' in crumbs
    for href in ("/api/?format=api", "/api/products/?format=api", "/api/products/C%23%20book/?format=api"):
        assert anon_client.get(href).status_code == 200, href


def _crumbs(html: str) -> str:
    return html.split('<ul class="breadcrumb">', 1)[1].split("</ul>", 1)[0]


def test_breadcrumbs_link_only_pages_that_answer_a_get(anon_client, make_product):
    # POST /products is the legacy create route: a crumb to it led to a 405.
    make_product("Lamp")
    crumbs = _crumbs(anon_client.get("/products/Lamp", HTTP_ACCEPT="text/html").content.decode())
    assert 'href="/products"' not in crumbs and "Legacy Product Detail" in crumbs
    api = _crumbs(anon_client.get("/api/products/Lamp/", HTTP_ACCEPT="text/html").content.decode())
    assert 'href="/api/products/"' in api  # the list answers a GET


def test_the_stock_action_is_offered_only_to_whoever_may_post_it(
    anon_client, plain_client, editor_client, make_product
):
    make_product("Lamp")
    for client, offered in ((anon_client, False), (plain_client, False), (editor_client, True)):
        page = client.get("/api/products/Lamp/", HTTP_ACCEPT="text/html").content.decode()
        assert ('/api/products/Lamp/stock/">Stock</a>' in page) is offered, client
