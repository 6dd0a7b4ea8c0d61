"""Characters the database refuses never reach it: 400/401, never 500 (run on PostgreSQL too)."""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth.models import User
from django.test import Client

from products.models import Product

pytestmark = pytest.mark.django_db


def signed_in_boss() -> Client:
    """A superuser's browser session; errors come back as responses, not exceptions."""
    User.objects.create_superuser("boss", password="pw-boss-123")
    browser = Client(raise_request_exception=False)
    browser.login(username="boss", password="pw-boss-123")
    return browser


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
    browser = signed_in_boss()
    assert browser.get(url).status_code == 400


# --- Numbers: no 500 for huge integers, no silent rounding ------------------------

HUGE = "9" * 4301


@pytest.mark.parametrize(
    "body, content_type",
    [
        ('{"name": "Big", "price": "1.00", "quantity": ' + HUGE + "}", "application/json"),
        ('{"name": "Big", "price": "1.00", "quantity": "' + HUGE + '"}', "application/json"),
        ("name=Big&price=1.00&quantity=" + HUGE, "application/x-www-form-urlencoded"),
        ('{"name": "Big", "price": "1.00", "quantity": -' + HUGE + "}", "application/json"),
    ],
    ids=["json_number", "json_string", "form", "negative_json_number"],
)
def test_a_4301_digit_quantity_is_400(editor_client, body, content_type):
    response = editor_client.generic("POST", "/api/products/", body, content_type=content_type)
    assert response.status_code == 400, response.content[:200]
    assert "quantity" in response.json()


def test_a_4301_digit_stock_delta_is_400(editor_client, make_product):
    make_product("Mug")
    for body in ('{"delta": ' + HUGE + "}", '{"delta": "' + HUGE + '"}'):
        response = editor_client.generic(
            "POST", "/api/products/Mug/stock/", body, content_type="application/json"
        )
        assert response.status_code == 400 and "delta" in response.json()


@pytest.mark.parametrize(
    "field, number, message",
    [
        ("price", "19.999999999999999", "Price must have at most 2 decimal places."),
        ("quantity", "2147483646.9999999", "Quantity must be an integer."),
        ("price", "1e400", "Price must have at most 10 digits before the decimal point."),
        # Ten digits before the point: refused for its decimals, not as too large.
        ("price", "9999999999.995", "Price must have at most 2 decimal places."),
        ("price", "10000000000.00", "Price must have at most 10 digits before the decimal point."),
    ],
)
def test_a_json_number_is_the_exact_decimal_the_client_wrote(editor_client, field, number, message):
    fields = {"name": '"Exact"', "price": '"1.00"', "quantity": "1"}
    as_number = {**fields, field: number}
    as_string = {**fields, field: f'"{number}"'}
    answers = []
    for values in (as_number, as_string):
        body = "{" + ", ".join(f'"{k}": {v}' for k, v in values.items()) + "}"
        response = editor_client.post("/api/products/", body, content_type="application/json")
        answers.append((response.status_code, response.json()))
    # Refused, like the same value as a string, with the same message.
    assert answers[0] == answers[1] == (400, {field: [message]})


def test_exact_json_numbers_are_still_accepted(editor_client):
    response = editor_client.post(
        "/api/products/", '{"name": "Ok", "price": 19.99, "quantity": 5.0}', content_type="application/json"
    )
    assert response.status_code == 201
    assert (response.json()["price"], response.json()["quantity"]) == ("19.99", 5)


@pytest.mark.parametrize("body", ['{"price": NaN}', '{"price": Infinity}', "[" * 5000 + "]" * 5000])
def test_json_that_is_not_plain_json_is_400(editor_client, body):
    response = editor_client.post("/api/products/", body, content_type="application/json")
    assert response.status_code == 400 and "JSON parse error" in response.json()["detail"]


@pytest.mark.parametrize(
    "number", ["1e100000000000000000000", "1E+100000000000000000000", "-1e-100000000000000000000"]
)
def test_a_json_number_beyond_any_decimal_is_400_on_every_write(editor_client, make_product, number):
    make_product("Mug", quantity=3)
    writes = [
        ("POST", "/api/products/", '{"name": "Big", "price": %s, "quantity": 1}'),
        ("PATCH", "/api/products/Mug/", '{"price": %s}'),
        ("POST", "/api/products/Mug/stock/", '{"delta": %s}'),
        ("POST", "/products", '{"name": "Big", "price": "1.00", "quantity": %s}'),
        ("POST", "/api/products/", '{"name": "Big", "price": "1.00", "note": %s}'),
    ]
    for method, url, body in writes:
        response = editor_client.generic(method, url, body % number, content_type="application/json")
        assert response.status_code == 400, (url, response.content[:200])
        assert response.json()["detail"].startswith("JSON parse error - number out of range")
    assert editor_client.get("/api/products/Mug/").json()["quantity"] == 3
    assert editor_client.get("/api/products/Big/").status_code == 404


# --- Form bodies whose bytes are not text ---------------------------------------------------


BOUNDARY = "b0undary"


def multipart(fields: dict[str, bytes], base64_fields: tuple[str, ...] = ()) -> bytes:
    import base64

    parts = b""
    for key, value in fields.items():
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n'
        if key in base64_fields:
            head += "Content-Transfer-Encoding: base64\r\n"
            value = base64.b64encode(value)
        parts += head.encode() + b"\r\n" + value + b"\r\n"
    return parts + f"--{BOUNDARY}--\r\n".encode()


UNDECODABLE_FORMS = [
    ("form_raw_byte", "application/x-www-form-urlencoded", b"name=Caf\xe9&price=1.00"),
    ("form_percent_escape", "application/x-www-form-urlencoded", b"name=Caf%E9&price=1.00"),
    ("form_surrogate", "application/x-www-form-urlencoded", b"name=%ED%A0%80&price=1.00"),
    (
        "multipart",
        f"multipart/form-data; boundary={BOUNDARY}",
        multipart({"name": b"Caf\xe9", "price": b"1.00"}),
    ),
    (
        "multipart_saying_filename",
        f"multipart/form-data; boundary={BOUNDARY}",
        multipart({"name": b"mp filename=caf\xe9", "price": b"1.00"}),
    ),
    (
        "multipart_base64",
        f"multipart/form-data; boundary={BOUNDARY}",
        multipart({"name": b"Caf\xe9", "price": b"1.00"}, base64_fields=("name",)),
    ),
    (
        # U+FFFD's bytes elsewhere in the body (the preamble) hid the stray byte.
        "multipart_replacement_in_the_preamble",
        f"multipart/form-data; boundary={BOUNDARY}",
        b"\xef\xbf\xbd\r\n" + multipart({"name": b"Caf\xe9", "price": b"1.00"}),
    ),
    ("form_punycode", "application/x-www-form-urlencoded; charset=punycode", b"name=Caf&price=1.00"),
]


@pytest.mark.parametrize(
    "content_type,body", [c[1:] for c in UNDECODABLE_FORMS], ids=[c[0] for c in UNDECODABLE_FORMS]
)
def test_a_form_whose_bytes_are_not_utf8_is_400_and_stores_nothing(
    editor_client, make_product, content_type, body
):
    # Django's form parsers would store U+FFFD in place of the bytes.
    make_product("Mug", quantity=1)
    created = editor_client.post("/api/products/", body, content_type=content_type)
    assert created.status_code == 400, created.content
    assert "text; nothing was changed" in created.json()["detail"]
    patched = editor_client.patch(
        "/api/products/Mug/", body.replace(b"price=", b"quantity="), content_type=content_type
    )
    assert patched.status_code == 400, patched.content
    from products.models import Product

    assert list(Product.objects.values_list("name", "quantity")) == [("Mug", 1)]


@pytest.mark.parametrize("url", ["/admin/login/", "/api-auth/login/", "/admin/password_change/"])
@pytest.mark.parametrize("charset", ["latin-1", "utf-16", "punycode"])
def test_a_login_form_in_another_charset_is_400_not_a_server_error(url, charset):
    # Django refuses a form that is not UTF-8 (BadRequest); its 400 view ran
    # the CSRF check again, which read the body again: gunicorn's own 500,
    # for anyone with a csrftoken cookie.
    browser = Client(raise_request_exception=False, enforce_csrf_checks=True)
    browser.cookies["csrftoken"] = "a" * 32
    response = browser.post(
        url, b"username=ed&password=x", content_type=f"application/x-www-form-urlencoded; charset={charset}"
    )
    assert response.status_code == 400, response.content[:300]
    assert b"Bad request (400)" in response.content


@pytest.mark.parametrize(
    "content_type,body",
    [
        ("application/x-www-form-urlencoded", b"name=Caf%E9&price=1.00&quantity=1"),
        (
            f"multipart/form-data; boundary={BOUNDARY}",
            multipart({"name": b"Caf\xe9", "price": b"1.00", "quantity": b"1"}),
        ),
    ],
    ids=["urlencoded", "multipart"],
)
def test_the_admins_form_refuses_bytes_that_are_not_utf8(content_type, body):
    # Django's own form parsing stored U+FFFD in their place.
    from products.models import Product

    browser = signed_in_boss()
    response = browser.post("/admin/products/product/add/", body, content_type=content_type)
    assert response.status_code == 400, response.content[:300]
    assert b"not valid utf-8" in response.content
    assert not Product.objects.exists()
    fine = browser.post(
        "/admin/products/product/add/",
        "name=Caf%C3%A9&price=1.00&quantity=1",
        content_type="application/x-www-form-urlencoded",
    )
    assert fine.status_code == 302 and Product.objects.get().name == "Café"


def test_forms_in_utf8_or_a_declared_charset_are_still_read(editor_client):
    ok = editor_client.post(
        "/api/products/",
        b"name=Caf%C3%A9&price=1.00",
        content_type="application/x-www-form-urlencoded",
    )
    assert ok.status_code == 201 and ok.json()["name"] == "Café"
    latin = editor_client.post(
        "/api/products/",
        b"name=Th\xe9&price=1.00",
        content_type="application/x-www-form-urlencoded; charset=latin-1",
    )
    assert latin.status_code == 201 and latin.json()["name"] == "Thé"
    parts = editor_client.post(
        "/api/products/",
        multipart({"name": "Crème".encode(), "price": b"2.00"}),
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
    )
    assert parts.status_code == 201 and parts.json()["name"] == "Crème"
    # U+FFFD itself is a character like any other when the client sends it.
    replacement = editor_client.post(
        "/api/products/",
        multipart({"name": "Odd \ufffd".encode(), "price": b"2.00"}),
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
    )
    assert replacement.status_code == 201 and replacement.json()["name"] == "Odd \ufffd"


# --- Paths that name nothing ------------------------------------------------------------


def test_a_path_whose_bytes_are_not_utf8_reaches_no_product(editor_token, make_product):
    # Django re-percent-encodes such bytes: /api/products/%FF/ reached "%FF" itself.
    from django.test import RequestFactory

    from products.request_guards import MarkUndecodablePaths

    from .support.wsgi_answer import call, server_environ

    make_product("%FF", quantity=7)
    factory, auth = RequestFactory(), {"HTTP_AUTHORIZATION": f"Token {editor_token}"}

    def answer(method: str, url: str, **kwargs):
        environ = server_environ(getattr(factory, method)(url, **kwargs), url)
        return call(MarkUndecodablePaths, environ)  # as productsite/wsgi.py wraps Django

    for url in ("/api/products/%FF/", "/api/products/%ED%A0%80/", "/products/%FF"):
        assert answer("get", url).status_code == 404, url
    assert answer("get", "/api/products/%FF/").json() == {"detail": "Not found."}
    patch = answer(
        "patch", "/api/products/%FF/", data='{"quantity": 1}', content_type="application/json", **auth
    )
    assert patch.status_code == 404
    assert answer("delete", "/api/products/%FF/", **auth).status_code == 404
    product = answer("get", "/api/products/%25FF/")  # the name, percent-encoded
    assert product.status_code == 200 and product.json()["quantity"] == 7


def test_a_nul_in_the_admins_shortcut_path_is_404():
    from django.contrib.contenttypes.models import ContentType
    from rest_framework.authtoken.models import Token

    browser = signed_in_boss()
    kind = ContentType.objects.get_for_model(Token).pk
    assert browser.get(f"/admin/r/{kind}/a%00/").status_code == 404  # was a DataError on PostgreSQL


def test_options_on_the_docs_pages_is_their_metadata_in_json(anon_client):
    for url in ("/api/docs/", "/api/redoc/", "/api/schema/"):
        response = anon_client.options(url)
        assert response.status_code == 200, (url, response.content[:200])
        assert response["Content-Type"] == "application/json"
        assert "name" in response.json()


@pytest.mark.parametrize(
    "query", ["name__regex=(", "name__iregex=%5B", "created_at__year=999999999", "quantity__gt=1e999"]
)
def test_a_lookup_the_database_refuses_in_the_admins_changelist_is_djangos_bad_lookup_redirect(
    query, make_product
):
    make_product("Mug")  # a regex is only compiled against rows
    browser = signed_in_boss()
    response = browser.get(f"/admin/products/product/?{query}")
    assert response.status_code == 302, response.content[:300]
    assert response["Location"] == "/admin/products/product/?e=1"
    assert browser.get(response["Location"]).status_code == 200


@pytest.mark.parametrize("object_id", ["1_0", "\uff11", "%201%20"])
def test_the_admins_object_pages_take_ascii_ids_only(object_id, make_product):
    from products.models import Product

    for number in range(1, 11):
        make_product(f"P{number}")
    browser = signed_in_boss()
    deleted = browser.post(f"/admin/products/product/{object_id}/delete/", {"post": "yes"})
    assert (
        deleted.status_code == 302 and "/delete/" not in deleted["Location"]
    )  # "does not exist": to the list
    assert Product.objects.count() == 10
    assert browser.get(f"/admin/products/product/{object_id}/change/").status_code == 302


@pytest.mark.parametrize("query", ["name__regex=^Mug$", "name__iregex=^mug$", "name__regex=(a*)*$"])
def test_the_admins_changelist_takes_no_regular_expression(query, make_product):
    # On SQLite Python's re runs it per row: "(a*)*$" against a long name of
    # a's kept a worker busy until gunicorn killed it. A valid pattern is
    # refused too (it was applied): the same bad-lookup redirect.
    make_product("Mug")
    browser = signed_in_boss()
    response = browser.get(f"/admin/products/product/?{query}")
    assert response.status_code == 302, response.content[:300]
    assert response["Location"] == "/admin/products/product/?e=1"


@pytest.mark.parametrize("selected", ["x", "1.5", "\x00", "9" * 4301, "9" * 20, "\uff13", "1_0", " 1 ", "-1"])
@pytest.mark.parametrize("action", ["mark_out_of_stock", "export_selected_as_csv", "delete_selected"])
def test_an_admin_action_on_a_selection_that_is_not_ids_changes_nothing(action, selected, make_product):
    from products.models import Product

    mug = make_product("Mug", quantity=3)
    browser = signed_in_boss()
    response = browser.post(
        "/admin/products/product/",
        {"action": action, "_selected_action": [str(mug.pk), selected], "index": "0"},
        follow=True,
    )
    assert response.status_code == 200, response.content[:300]
    assert (
        "The selection is not a list of items of this page; nothing was changed." in response.content.decode()
    )
    assert list(Product.objects.values_list("name", "quantity")) == [("Mug", 3)]


@pytest.mark.parametrize(
    "url",
    [
        "/admin/auth/user/?username__regex=(",
        "/admin/auth/user/?date_joined__year=999999999",
        "/admin/auth/group/?name__regex=(",
        "/admin/authtoken/tokenproxy/?created__year=999999999",
    ],
)
def test_the_sites_other_lists_redirect_a_refused_lookup_too(url):
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    Group.objects.create(name="editors")
    browser = signed_in_boss()
    Token.objects.create(user=User.objects.get(username="boss"))
    response = browser.get(url)
    assert response.status_code == 302 and response["Location"].endswith("?e=1"), response.status_code


@pytest.mark.parametrize("route", ["/api/products/", "/products"])
def test_a_body_of_many_unknown_fields_gets_a_short_400(editor_client, route):
    # A review sent 90,000 made-up keys and got a 7 MB answer.
    body = {f"k{number}": 1 for number in range(5000)} | {"name": "Many", "price": "1.00"}
    response = editor_client.post(route, body, format="json")
    assert response.status_code == 400
    errors = response.json()
    assert len(errors) == 21 and "k0" in errors and "k19" in errors and "k20" not in errors
    assert errors["non_field_errors"] == [
        "4,980 more field(s) the product does not have; the first 20 are named."
    ]
    assert len(response.content) < 5000
    assert not Product.objects.filter(name="Many").exists()


@pytest.mark.parametrize("route", ["/api/products/", "/products"])
@pytest.mark.parametrize(
    "header, coding",
    [
        ("HTTP_CONTENT_ENCODING", "gzip"),
        ("HTTP_CONTENT_ENCODING", "br"),
        ("HTTP_CONTENT_ENCODING", "GZIP"),
        ("HTTP_CONTENT_ENCODING", "gzip, identity"),
        # gunicorn accepts these transfer codings but decodes only the chunking.
        ("HTTP_TRANSFER_ENCODING", "gzip, chunked"),
        ("HTTP_TRANSFER_ENCODING", "deflate, chunked"),
        ("HTTP_TRANSFER_ENCODING", "compress, chunked"),
        ("HTTP_TRANSFER_ENCODING", "GZIP,chunked"),
    ],
)
def test_a_body_with_a_content_or_transfer_coding_is_415_and_creates_nothing(
    editor_client, route, header, coding
):
    # Reviews found a plain body labelled gzip (Content-Encoding, and later
    # "Transfer-Encoding: gzip, chunked") stored as if it were plain (201).
    body = b'{"name": "Coded", "price": "1.00"}'
    response = editor_client.generic("POST", route, body, content_type="application/json", **{header: coding})
    assert response.status_code == 415
    assert "send the body uncompressed" in response.json()["detail"]
    assert not Product.objects.filter(name="Coded").exists()


def test_a_gzipped_update_is_415_and_identity_is_plain(editor_client, make_product):
    import gzip

    make_product("Coded")
    zipped = gzip.compress(b'{"price": "2.00"}')
    response = editor_client.generic(
        "PATCH", "/api/products/Coded/", zipped, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert response.status_code == 415
    plain = editor_client.generic(
        "PATCH",
        "/api/products/Coded/",
        b'{"price": "3.00"}',
        content_type="application/json",
        HTTP_CONTENT_ENCODING="identity",
    )
    assert plain.status_code == 200 and plain.json()["price"] == "3.00"


@pytest.mark.parametrize("route", ["/api/products/", "/products"])
@pytest.mark.parametrize("kind", ["urlencoded", "multipart"])
def test_a_form_field_sent_twice_is_400_as_a_json_key_twice_is(editor_client, route, kind):
    # A review saw name=fd1&name=fd2 create "fd2": the last one silently won.
    data = {"name": ["Twice 1", "Twice 2"], "price": "1.00"}
    if kind == "urlencoded":
        response = editor_client.post(
            route, "name=Twice+1&name=Twice+2&price=1.00", content_type="application/x-www-form-urlencoded"
        )
    else:
        response = editor_client.post(route, data, format="multipart")
    assert response.status_code == 400
    assert "'name' is sent 2 times" in response.json()["detail"]
    assert not Product.objects.filter(name__startswith="Twice").exists()


@pytest.mark.parametrize(
    "delta, message",
    [
        ("1.5", "Delta must be an integer."),
        (True, "Delta must be an integer."),
        (2147483648, "Delta must be at most 2147483647."),
        (-2147483648, "Delta must be at least -2147483647."),
    ],
)
def test_a_bad_stock_delta_is_worded_as_the_quantitys_rules_are(editor_client, make_product, delta, message):
    make_product("Mug")
    response = editor_client.post("/api/products/Mug/stock/", {"delta": delta}, format="json")
    assert response.status_code == 400 and response.json() == {"delta": [message]}


@pytest.mark.parametrize(
    "delta, message",
    [
        ("1e999999999", "Delta must be at most 2147483647."),
        ("-1e999999999", "Delta must be at least -2147483647."),
        ("1E+1000000", "Delta must be at most 2147483647."),
    ],
)
def test_a_stock_delta_beyond_decimals_exponent_range_is_400(editor_client, make_product, delta, message):
    # A review found {"delta": 1e999999999} answered 500: the JSON number is read
    # exactly as a Decimal, and abs() of it overflows the decimal context.
    make_product("Mug")
    response = editor_client.generic(
        "POST", "/api/products/Mug/stock/", '{"delta": ' + delta + "}", content_type="application/json"
    )
    assert response.status_code == 400, response.content[:200]
    assert response.json() == {"delta": [message]}
