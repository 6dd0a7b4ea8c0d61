"""ETag / If-None-Match (304) on reads, If-Match (412) on writes."""

import pytest

from products.models import Product

pytestmark = pytest.mark.django_db

URL = "/api/products/Mug/"


@pytest.fixture(autouse=True)
def mug(make_product):
    return make_product("Mug", price="1.00", quantity=5)


@pytest.mark.parametrize("url", [URL, "/products/Mug"], ids=["api", "legacy_route"])
def test_if_none_match_answers_304_from_the_cache(anon_client, url, django_assert_num_queries):
    first = anon_client.get(url)
    etag = first["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    with django_assert_num_queries(0):
        cached = anon_client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert cached.status_code == 304
    assert cached["ETag"] == etag
    assert cached["X-Cache"] == "HIT"
    assert cached.content == b""


def test_etag_changes_when_the_product_changes(anon_client, editor_client):
    etag = anon_client.get(URL)["ETag"]
    patched = editor_client.patch(URL, {"price": "2.00"}, format="json")
    assert patched["ETag"] != etag
    response = anon_client.get(URL, HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 200
    assert response.json()["price"] == "2.00"
    assert response["ETag"] == patched["ETag"]


def test_stale_if_none_match_gets_the_body(anon_client):
    response = anon_client.get(URL, HTTP_IF_NONE_MATCH='"not-the-etag"')
    assert response.status_code == 200
    assert response.json()["name"] == "Mug"


WRITES = [
    ("put", URL, {"name": "Mug", "price": "3.00", "quantity": 1}, 200),
    ("patch", URL, {"price": "3.00"}, 200),
    ("delete", URL, None, 204),
    ("post", URL + "stock/", {"delta": 1}, 200),
]
WRITE_IDS = ["put", "patch", "delete", "stock"]


def _call(client, method, url, data, **headers):
    if data is None:
        return getattr(client, method)(url, **headers)
    return getattr(client, method)(url, data, format="json", **headers)


@pytest.mark.parametrize("method, url, data, ok", WRITES, ids=WRITE_IDS)
def test_write_with_current_if_match_succeeds(anon_client, editor_client, method, url, data, ok):
    etag = anon_client.get(URL)["ETag"]
    assert _call(editor_client, method, url, data, HTTP_IF_MATCH=etag).status_code == ok


@pytest.mark.parametrize("method, url, data, ok", WRITES, ids=WRITE_IDS)
def test_write_with_outdated_if_match_is_412_and_changes_nothing(
    anon_client, editor_client, method, url, data, ok
):
    etag = anon_client.get(URL)["ETag"]
    # Another editor changes the product first.
    assert editor_client.patch(URL, {"quantity": 6}, format="json").status_code == 200
    before = list(Product.objects.values_list("name", "price", "quantity"))
    response = _call(editor_client, method, url, data, HTTP_IF_MATCH=etag)
    assert response.status_code == 412
    assert "detail" in response.json()
    assert list(Product.objects.values_list("name", "price", "quantity")) == before


@pytest.mark.parametrize("method, url, data, ok", WRITES, ids=WRITE_IDS)
def test_write_whose_if_none_match_matches_is_412_and_changes_nothing(
    anon_client, editor_client, method, url, data, ok
):
    # RFC 9110 13.1.2: on a write, a matching If-None-Match fails the precondition.
    etag = anon_client.get(URL)["ETag"]
    before = list(Product.objects.values_list("name", "price", "quantity"))
    for header in (etag, "*", f"W/{etag}", f'"other", {etag}'):
        response = _call(editor_client, method, url, data, HTTP_IF_NONE_MATCH=header)
        assert response.status_code == 412, header
        assert "If-None-Match" in response.json()["detail"]
    assert list(Product.objects.values_list("name", "price", "quantity")) == before
    assert _call(editor_client, method, url, data, HTTP_IF_NONE_MATCH='"other"').status_code == ok


@pytest.mark.parametrize("method, url, data, ok", WRITES, ids=WRITE_IDS)
def test_an_empty_if_match_matches_nothing(editor_client, method, url, data, ok):
    # A generated client sends the header whenever if_match is set:
    # if_match=response.headers.get("ETag", "") must not become an unconditional write.
    before = list(Product.objects.values_list("name", "price", "quantity"))
    for header in ("", ","):
        assert _call(editor_client, method, url, data, HTTP_IF_MATCH=header).status_code == 412, repr(header)
    assert list(Product.objects.values_list("name", "price", "quantity")) == before


def test_if_match_star_matches_an_existing_product(editor_client):
    assert editor_client.patch(URL, {"quantity": 1}, format="json", HTTP_IF_MATCH="*").status_code == 200


def test_write_responses_carry_the_etag_a_read_would_give(anon_client, editor_client):
    patched = editor_client.patch(URL, {"quantity": 9}, format="json")
    assert anon_client.get(URL)["ETag"] == patched["ETag"]
    stocked = editor_client.post(URL + "stock/", {"delta": 1}, format="json")
    assert anon_client.get(URL)["ETag"] == stocked["ETag"]


@pytest.mark.parametrize("url", [URL, "/products/Mug"], ids=["api", "seed_route"])
def test_the_browsable_page_has_its_own_validator(anon_client, url):
    json_tag = anon_client.get(url)["ETag"]
    page = anon_client.get(url, HTTP_ACCEPT="text/html")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    html_tag = page["ETag"]
    assert html_tag != json_tag and html_tag.startswith("W/")
    # The JSON's tag never revalidates the page, nor the page's tag the JSON.
    assert anon_client.get(url, HTTP_ACCEPT="text/html", HTTP_IF_NONE_MATCH=json_tag).status_code == 200
    assert anon_client.get(url, HTTP_IF_NONE_MATCH=html_tag).status_code == 200
    # Each tag revalidates its own representation.
    assert anon_client.get(url, HTTP_ACCEPT="text/html", HTTP_IF_NONE_MATCH=html_tag).status_code == 304
    assert anon_client.get(url, HTTP_IF_NONE_MATCH=json_tag).status_code == 304
