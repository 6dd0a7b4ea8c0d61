"""Listing: filters, strict ordering, and keyset pagination that never repeats or skips."""

from __future__ import annotations

import base64
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from products.models import Product
from products.pagination import sign_cursor

from .support.names import CASE_FOLDING_NAMES

pytestmark = pytest.mark.django_db

ORDERINGS = [
    "name",
    "-name",
    "price",
    "-price",
    "quantity",
    "-quantity",
    "created_at",
    "-created_at",
    "updated_at",
    "-updated_at",
]


def _bulk(n: int, prefix: str = "p") -> None:
    # Few distinct prices, quantities and timestamps: ties everywhere, which is
    # what the name tie-breaker must handle.
    now = timezone.now()
    Product.objects.bulk_create(
        Product(name=f"{prefix}{i:04d}", price=Decimal(i % 3) + Decimal("0.50"), quantity=i % 4)
        for i in range(n)
    )
    Product.objects.update(created_at=now, updated_at=now)


def _walk(client, url: str, max_pages: int = 1000, between=None) -> list[str]:
    seen: list[str] = []
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        seen += [p["name"] for p in body["results"]]
        url = body["next"]
        pages += 1
        if between:
            between(pages)
        assert pages < max_pages
    return seen


def _sort_key(ordering: str):
    field = ordering.lstrip("-")

    def key(p: Product):
        return (getattr(p, field), p.name) if field != "name" else (p.name,)

    return key


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_walk_sees_every_product_once_in_order(anon_client, ordering):
    _bulk(23)
    seen = _walk(anon_client, f"/api/products/?ordering={ordering}&page_size=4")
    expected = sorted(Product.objects.all(), key=_sort_key(ordering), reverse=ordering.startswith("-"))
    assert seen == [p.name for p in expected]


@pytest.mark.parametrize("ordering", ["price", "-quantity", "created_at", "-name"])
def test_walk_under_concurrent_inserts_and_deletes_misses_nothing(anon_client, ordering):
    _bulk(30)
    survivors = {f"p{i:04d}" for i in range(30) if i % 5 != 0}
    doomed = [f"p{i:04d}" for i in range(30) if i % 5 == 0]

    def churn(page: int) -> None:
        # Between pages: delete some products, add others with tied keys.
        if doomed:
            Product.objects.filter(name=doomed.pop()).delete()
        Product.objects.create(name=f"new{page:03d}", price="1.50", quantity=1)

    seen = _walk(anon_client, f"/api/products/?ordering={ordering}&page_size=3", between=churn)
    assert len(seen) == len(set(seen)), "an item was seen twice"
    assert survivors <= set(seen), f"missed: {sorted(survivors - set(seen))}"


def test_previous_link_walks_back_to_the_same_pages(anon_client):
    _bulk(10)
    first = anon_client.get("/api/products/?ordering=-price&page_size=3").json()
    assert first["previous"] is None
    second = anon_client.get(first["next"]).json()
    back = anon_client.get(second["previous"]).json()
    assert [p["name"] for p in back["results"]] == [p["name"] for p in first["results"]]
    assert back["previous"] is None


def test_page_size_is_capped_and_checked(anon_client):
    _bulk(3)
    assert len(anon_client.get("/api/products/?page_size=2").json()["results"]) == 2
    for bad in ["0", "501", "abc", "-1", "%EF%BC%95", "1_0", "+2", "%202", "9" * 4301]:
        response = anon_client.get(f"/api/products/?page_size={bad}")
        assert response.status_code == 400
        assert "page_size" in response.json()


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "bm90IGpzb24",
        base64.urlsafe_b64encode(b'{"o":"price","d":"n","k":"a","v":"1.00"}').decode(),  # unsigned
        # Signed, so only the document's shape refuses them:
        sign_cursor(base64.urlsafe_b64encode(b'{"o":"price","d":"x","k":"a","v":"1.00"}').decode()),
        sign_cursor(base64.urlsafe_b64encode(b'{"o":"price","d":"n","k":"a","v":"abc"}').decode()),
        sign_cursor("bm90IGpzb24"),
        "%00",
        "\u00e9",
    ],
)
def test_invalid_cursor_answers_400(anon_client, cursor):
    response = anon_client.get("/api/products/", {"cursor": cursor, "ordering": "price"})
    assert response.status_code == 400
    assert response.json() == {"cursor": ["Invalid cursor."]}


def test_a_cursor_the_server_did_not_issue_answers_400(anon_client, settings):
    _bulk(5)
    next_url = anon_client.get("/api/products/?ordering=price&page_size=2").json()["next"]
    cursor = next_url.split("cursor=")[1].split("&")[0]
    assert anon_client.get(next_url).status_code == 200
    document, signature = cursor.split(".")
    # The same position, written by hand: a valid document, not signed here.
    decoded = base64.urlsafe_b64decode(document + "=" * (-len(document) % 4))
    edited = base64.urlsafe_b64encode(decoded.replace(b'"k":"p', b'"k":"q')).decode().rstrip("=")
    for forged in (document, f"{edited}.{signature}", f"{document}.{signature[:-2]}AA"):
        response = anon_client.get("/api/products/", {"ordering": "price", "page_size": 2, "cursor": forged})
        assert response.status_code == 400, forged
        assert response.json() == {"cursor": ["Invalid cursor."]}
    # A key rotation keeps the cursors clients hold while the old key is a fallback.
    old_key = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-new-key-" + "x" * 50, [old_key]
    assert anon_client.get(next_url).status_code == 200
    settings.SECRET_KEY_FALLBACKS = []
    assert anon_client.get(next_url).status_code == 400


def test_cursor_from_another_ordering_answers_400(anon_client):
    _bulk(5)
    next_url = anon_client.get("/api/products/?ordering=price&page_size=2").json()["next"]
    response = anon_client.get(next_url.replace("ordering=price", "ordering=quantity"))
    assert response.status_code == 400


def _names(client, query: str) -> list[str]:
    response = client.get("/api/products/?" + query)
    assert response.status_code == 200, response.content
    return [p["name"] for p in response.json()["results"]]


def test_filters_are_inclusive_and_combine(anon_client, make_product):
    make_product("a", "1.00", 0)
    make_product("B mug", "2.00", 3)
    make_product("c mug", "3.00", 0)
    make_product("d", "4.00", 1)

    assert _names(anon_client, "min_price=2&max_price=3") == ["B mug", "c mug"]
    assert _names(anon_client, "search=MUG") == ["B mug", "c mug"]
    assert _names(anon_client, "in_stock=true") == ["B mug", "d"]
    assert _names(anon_client, "in_stock=false&search=mug") == ["c mug"]
    assert _names(anon_client, "ordering=-price&min_price=2.00") == ["d", "c mug", "B mug"]


def test_search_folds_case_letter_by_letter_whatever_the_term_length(anon_client, make_product):
    # "ß" and "ﬁ" have no one-letter case pair: a search for them finds them,
    # not the "ss" and "fi" of full case folding. One answer for 1-2 letter
    # terms (a scan) and longer ones (the trigram index), on SQLite as on PostgreSQL.
    for name in CASE_FOLDING_NAMES:
        make_product(name, "1.00", 1)

    def names(term: str) -> list[str]:
        return _names(anon_client, urlencode({"search": term}))

    assert names("ß") == ["Straße mug"]
    assert names("aße") == ["Straße mug"]
    assert names("ss") == ["Classic glass"]
    assert names("STRASSE") == []
    assert names("fi") == ["First aid kit"]
    assert names("ﬁ") == ["ﬁsh bowl"]
    assert names("ﬁsh") == ["ﬁsh bowl"]
    assert names("σο") == names("σοφια") == ["ΣΟΦΙΑ vase"]


def test_a_parameter_given_twice_takes_its_last_value(anon_client, make_product):
    # As QueryDict.get() reads it (docs/api.md says so).
    make_product("a mug", "1.00", 0)
    make_product("b", "2.00", 3)
    make_product("c mug", "3.00", 0)

    assert _names(anon_client, "min_price=3&min_price=2") == ["b", "c mug"]
    assert _names(anon_client, "search=zzz&search=MUG") == ["a mug", "c mug"]
    assert _names(anon_client, "ordering=name&ordering=-price") == ["c mug", "b", "a mug"]


@pytest.mark.parametrize(
    "query, field",
    [
        ("min_price=abc", "min_price"),
        ("max_price=1e100000", "max_price"),
        ("min_price=NaN", "min_price"),
        ("max_price=-1", "max_price"),
        ("in_stock=maybe", "in_stock"),
        ("ordering=bogus", "ordering"),
        ("ordering=price,name", "ordering"),
        ("ordering=--price", "ordering"),
    ],
)
def test_invalid_filter_values_answer_400_with_the_field(anon_client, query, field):
    response = anon_client.get("/api/products/?" + query)
    assert response.status_code == 400
    body = response.json()
    assert list(body) == [field] and body[field][0]


@pytest.mark.parametrize("query", ["min_price=1e400", "max_price=99999999999", "min_price=1e51"])
def test_a_price_bound_too_large_gets_one_message_naming_the_price_limit(anon_client, query):
    # django-filter's NumberFilter adds its own 1e50 cap; the price limit is the rule.
    field = query.split("=")[0]
    response = anon_client.get("/api/products/?" + query)
    assert response.status_code == 400
    assert response.json() == {field: ["Ensure this value is less than or equal to 9999999999.99."]}


@pytest.mark.parametrize(
    "query", ["ordering=bogus", "min_price=abc", "cursor=zzz", "page_size=0", "ordering=-price"]
)
def test_browsable_api_renders_bad_list_parameters_without_a_500(query):
    from rest_framework.test import APIClient

    client = APIClient(raise_request_exception=True)
    response = client.get("/api/products/?" + query, HTTP_ACCEPT="text/html")
    assert response.status_code == (200 if query == "ordering=-price" else 400)
    assert response["Content-Type"].startswith("text/html")


def test_empty_parameters_mean_unset_as_a_form_sends_them(anon_client, make_product):
    make_product("a", "1.00", 0)
    make_product("b", "2.00", 3)
    response = anon_client.get(
        "/api/products/?search=&min_price=&max_price=&in_stock=&ordering=&cursor=&page_size="
    )
    assert response.status_code == 200
    assert [p["name"] for p in response.json()["results"]] == ["a", "b"]


@pytest.mark.parametrize(
    "ordering, doc",
    [
        ("created_at", {"o": "created_at", "d": "n", "k": "a", "v": "0001-01-01T00:00:00+01:00"}),
        ("created_at", {"o": "created_at", "d": "n", "k": "a", "v": "9999-12-31T23:59:59-01:00"}),
        ("price", {"o": "price", "d": "n", "k": "a", "v": "1e-100000"}),
        ("price", {"o": "price", "d": "n", "k": "a", "v": "99999999999999999999.00"}),
        ("name", {"o": "name", "d": "n", "k": "a\u0000b"}),
        ("name", {"o": "name", "d": "n", "k": "x" * 300}),
    ],
    ids=["year_1_offset", "year_9999_offset", "tiny_exponent", "huge_price", "nul_in_name", "long_name"],
)
def test_forged_cursor_is_400_not_500(anon_client, ordering, doc):
    import base64

    import orjson

    # Signed as the server signs, so the document's bounds are what refuses it.
    cursor = sign_cursor(base64.urlsafe_b64encode(orjson.dumps(doc)).decode().rstrip("="))
    response = anon_client.get("/api/products/", {"ordering": ordering, "cursor": cursor})
    assert response.status_code == 400
    assert "cursor" in response.json()


@pytest.mark.parametrize("bound", ["1_000", "１０００", "١٠٠٠", "1 000"])
def test_a_price_filter_takes_only_the_plain_numbers_a_price_is_written_in(anon_client, bound):
    response = anon_client.get(f"/api/products/?min_price={bound}")
    assert response.status_code == 400
    assert list(response.json()) == ["min_price"]
