"""The deployment's fast create path (productsite.fastcreate) answers exactly as Django would.

Requests go through the WSGI stack of productsite/wsgi.py (the read fast path,
the create fast path, Django), in process, against real Redis and the real
test database. Parity tests send the same request with the fast paths on and
off and compare status, headers and body: the expected answer is always
Django's own. Every request the fast path does not answer must reach Django
with its body intact.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Permission
from django.db import transaction
from django.test import RequestFactory
from rest_framework.authtoken.models import Token

from products import auth_limits, counters
from products import cache as product_cache
from products.models import Product

from .support.wsgi_answer import Answer, call

FROZEN = dt.datetime(2026, 11, 26, 7, 0, 0, 123456, tzinfo=dt.UTC)
PATH = "/api/products/"


@pytest.fixture
def wsgi_post(db, monkeypatch) -> Iterator:
    """POST through the stack productsite/wsgi.py builds, built per request (see test_deployment_fastpath)."""

    from productsite import fastcreate, fastpath

    # Like Django's test client: keep close_old_connections from closing the test's transaction.
    monkeypatch.setattr(fastpath, "close_old_connections", lambda: None)
    monkeypatch.setattr(fastcreate, "close_old_connections", lambda: None)
    factory = RequestFactory()

    def post(
        body: object, path: str = PATH, content_type: str = "application/json", **headers: str
    ) -> Answer:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        environ = factory.post(
            path,
            data=data,
            content_type=content_type,
            **{"HTTP_HOST": "testserver", "HTTP_X_REQUEST_ID": "compare-1", **headers},
        ).environ
        return call(lambda django: fastpath.FastProductReads(fastcreate.FastProductCreates(django)), environ)

    return post


@pytest.fixture
def frozen_time(monkeypatch):
    """Both paths stamp the same created_at/updated_at (the body and the ETag carry them)."""
    from django.utils import timezone

    monkeypatch.setattr(timezone, "now", lambda: FROZEN)


@pytest.fixture
def token(editor) -> str:
    return "Token " + Token.objects.get_or_create(user=editor)[0].key


def _compare(wsgi_post, settings, body, **headers) -> tuple[Answer, Answer]:
    """Send the same create with the fast paths on, then off; neither keeps its row."""
    answers = []
    for fast in (True, False):
        settings.PRODUCT_FAST_PATH = fast
        with transaction.atomic():
            answers.append(wsgi_post(body, **headers))
            transaction.set_rollback(True)
    return answers[0], answers[1]


def _same_but_id(fast: Answer, slow: Answer) -> None:
    """Assert the answers are identical, but for the id (PostgreSQL's sequence does not roll back)."""
    assert fast.status_code == slow.status_code == 201
    fast_id, slow_id = fast.json()["id"], slow.json()["id"]
    assert fast.body == slow.body.replace(f'"id":{slow_id},'.encode(), f'"id":{fast_id},'.encode())
    same = {"ETag", "Content-Length"} if fast_id != slow_id else set()
    assert [(k, v) for k, v in fast.header_list if k not in same] == [
        (k, v) for k, v in slow.header_list if k not in same
    ]
    assert [k for k, _ in fast.header_list] == [k for k, _ in slow.header_list]
    from products.responses import etag_of

    assert fast.headers["ETag"] == etag_of(fast.json())


SUCCESSES = {
    "plain": {"name": "Blue mug", "price": "12.50", "quantity": 7},
    "no_quantity": {"name": "Blue mug", "price": "12.50"},
    "number_price": {"name": "Blue mug", "price": 12.5, "quantity": 7},
    "integer_price": {"name": "Blue mug", "price": 12},
    "string_quantity": {"name": "Blue mug", "price": "0", "quantity": "3"},
    "trimmed_name": {"name": "  Blue mug\u2028", "price": "1.00"},
    "unicode_name": {"name": "Tasse bleue \u00e9\u2603 \u2028x", "price": "9999999999.99"},
    "dot_name": {"name": ".", "price": "1"},
    "dot_dot_name": {"name": "..", "price": "1"},
    # Names the fast path builds the Location of without reverse() (as the bench's).
    "plain_name": {"name": "new-run_1.2-3", "price": "9.99", "quantity": 3},
    "dots_only_name": {"name": "...", "price": "1"},
    "dot_first_name": {"name": ".hidden", "price": "1"},
    "quoted_name": {"name": 'a "b" \\ c', "price": "1"},
    # Sent by the browsable API's forms; the serializer ignores it.
    "csrf_field": {"name": "Blue mug", "price": "1", "csrfmiddlewaretoken": "x"},
}


@pytest.mark.parametrize("case", SUCCESSES, ids=list(SUCCESSES))
def test_a_create_is_answered_by_the_fast_path_exactly_as_by_drf(
    wsgi_post, settings, token, frozen_time, case
):
    fast, slow = _compare(wsgi_post, settings, SUCCESSES[case], HTTP_AUTHORIZATION=token)
    assert not fast.handled_by_django
    assert slow.handled_by_django
    _same_but_id(fast, slow)


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_ACCEPT": "application/json"},
        {"HTTP_ACCEPT": "*/*"},
        {"CONTENT_TYPE": "application/json; charset=utf-8"},
        {"HTTP_AUTHORIZATION_KEYWORD": "token"},
        {"SCRIPT_NAME": "/shop"},
    ],
    ids=["accept_json", "accept_any", "charset", "lowercase_keyword", "script_name"],
)
@pytest.mark.parametrize("case", ["plain", "plain_name"])
def test_variants_the_fast_path_also_answers(wsgi_post, settings, token, frozen_time, headers, case):
    headers = dict(headers)
    if headers.pop("HTTP_AUTHORIZATION_KEYWORD", None):
        token = "token " + token.split()[1]
    fast, slow = _compare(wsgi_post, settings, SUCCESSES[case], HTTP_AUTHORIZATION=token, **headers)
    assert not fast.handled_by_django
    _same_but_id(fast, slow)


def test_behind_an_https_proxy_the_fast_create_sends_hsts_as_django_does(
    wsgi_post, settings, token, frozen_time
):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_PRELOAD = True
    fast, slow = _compare(
        wsgi_post, settings, SUCCESSES["plain"], HTTP_AUTHORIZATION=token, HTTP_X_FORWARDED_PROTO="https"
    )
    assert not fast.handled_by_django
    _same_but_id(fast, slow)
    assert fast.headers["Location"].startswith("https://testserver/")
    assert "Strict-Transport-Security" in fast.headers


# --- Everything else reaches Django, body intact, and gets Django's answer ------------

GOOD = SUCCESSES["plain"]
HANDED_OVER = {
    "duplicate_name": ({"name": "Taken", "price": "1"}, {}),
    "bad_price": ({**GOOD, "price": "abc"}, {}),
    "price_with_three_places": ({**GOOD, "price": "1.005"}, {}),
    "negative_quantity": ({**GOOD, "quantity": -1}, {}),
    "float_quantity": ({**GOOD, "quantity": 1.5}, {}),
    "unknown_field": ({**GOOD, "colour": "red"}, {}),
    "read_only_field": ({**GOOD, "id": 5}, {}),
    "name_too_long": ({**GOOD, "name": "x" * 201}, {}),
    "name_with_slash": ({**GOOD, "name": "a/b"}, {}),
    "blank_name": ({**GOOD, "name": "   "}, {}),
    "number_name": ({**GOOD, "name": 5}, {}),
    "no_price": ({"name": "Blue mug"}, {}),
    "null_price": ({**GOOD, "price": None}, {}),
    "empty_object": ({}, {}),
    "json_list": ([GOOD], {}),
    "not_json": (b'{"name": "Blue mug", "price": ', {}),
    "nan_price": (b'{"name": "Blue mug", "price": NaN}', {}),
    "not_utf8": (b'{"name": "\xff", "price": "1"}', {}),
    "no_token": (GOOD, {"HTTP_AUTHORIZATION": None}),
    "bad_token": (GOOD, {"HTTP_AUTHORIZATION": "Token wrong"}),
    "token_keyword_only": (GOOD, {"HTTP_AUTHORIZATION": "Token"}),
    "three_part_token": (GOOD, {"HTTP_AUTHORIZATION": "Token a b"}),
    "basic_auth": (GOOD, {"HTTP_AUTHORIZATION": "Basic ZWRpdG9yOnB3LWVkaXRvcg=="}),
    "no_permission": (GOOD, {"plain_user": True}),
    "form_body": ("name=Blue+mug&price=1", {"content_type": "application/x-www-form-urlencoded"}),
    "text_body": ("name", {"content_type": "text/plain"}),
    "indent_accept": (GOOD, {"HTTP_ACCEPT": "application/json; indent=4"}),
    "format_query": (GOOD, {"path": PATH + "?format=json"}),
    "no_trailing_slash": (GOOD, {"path": "/api/products"}),
    "session_cookie": (GOOD, {"HTTP_COOKIE": "sessionid=whatever"}),
    "nul_in_a_header": (GOOD, {"HTTP_USER_AGENT": "curl\x00"}),
    "unknown_host": (GOOD, {"HTTP_HOST": "evil.example.com"}),
    "large_body": ({**GOOD, "padding": "x" * 5000}, {}),
    "content_coding": (GOOD, {"HTTP_CONTENT_ENCODING": "gzip"}),  # 415
}


@pytest.mark.parametrize("case", HANDED_OVER, ids=list(HANDED_OVER))
def test_requests_the_fast_path_does_not_answer_get_djangos_answer(
    wsgi_post, settings, token, plain_user, frozen_time, make_product, case
):
    make_product(name="Taken")
    body, options = HANDED_OVER[case]
    options = dict(options)
    headers = {"HTTP_AUTHORIZATION": token}
    if options.pop("plain_user", False):
        headers["HTTP_AUTHORIZATION"] = "Token " + Token.objects.get_or_create(user=plain_user)[0].key
    for key, value in list(options.items()):
        if key.startswith("HTTP_") and value is None:
            headers.pop(key)
            options.pop(key)
    headers.update(options)
    fast, slow = _compare(wsgi_post, settings, body, **headers)
    assert fast.handled_by_django
    assert (fast.status_code, _without_id(fast.body)) == (slow.status_code, _without_id(slow.body))
    assert comparable(fast) == comparable(slow)
    # Some of them are creates too, that only Django answers.
    created = ("indent_accept", "format_query", "basic_auth", "form_body", "session_cookie")
    assert (fast.status_code == 201) is (case in created)


def comparable(answer: Answer) -> list[tuple[str, str]]:
    """Return the headers but Date, a renewed CSRF cookie's random value masked.

    A created product's id differs on PostgreSQL (its sequence does not roll
    back): then the headers that carry it are left out too.
    """
    skip = {"Date"} | ({"ETag", "Content-Length"} if answer.status_code == 201 else set())
    return sorted(
        (name, _COOKIE_NOISE.sub(r"\1=<varies>", value) if name == "Set-Cookie" else value)
        for name, value in answer.header_list
        if name not in skip
    )


def _without_id(body: bytes) -> bytes:
    return re.sub(rb'"id": ?[0-9]+', b'"id":0', body)


_COOKIE_NOISE = re.compile(r"(csrftoken|expires)=[^;]+")


def test_the_hand_over_cases_are_not_vacuous(wsgi_post, token, make_product):
    make_product(name="Taken")
    assert wsgi_post({"name": "Taken", "price": "1"}, HTTP_AUTHORIZATION=token).status_code == 409
    assert wsgi_post({**GOOD, "price": "abc"}, HTTP_AUTHORIZATION=token).status_code == 400
    assert wsgi_post({**GOOD, "colour": "red"}, HTTP_AUTHORIZATION=token).status_code == 400
    assert wsgi_post(GOOD, HTTP_AUTHORIZATION="Token wrong").status_code == 401
    assert wsgi_post(GOOD).status_code == 401
    assert wsgi_post(b"{", HTTP_AUTHORIZATION=token).status_code == 400


# --- The create itself: one query, the row, the invalidation, the log line -------------


@pytest.mark.django_db(transaction=True)
def test_a_warm_fast_create_is_one_query(wsgi_post, token, django_assert_num_queries):
    assert not wsgi_post({"name": "first", "price": "1"}, HTTP_AUTHORIZATION=token).handled_by_django
    # Token, user and permissions from Redis, the name checked by the unique
    # index: the INSERT is the only statement.
    with django_assert_num_queries(1) as captured:
        answer = wsgi_post({"name": "second", "price": "1"}, HTTP_AUTHORIZATION=token)
    assert answer.status_code == 201
    assert not answer.handled_by_django
    assert captured.captured_queries[0]["sql"].startswith("INSERT")


@pytest.mark.django_db(transaction=True)
def test_the_created_product_is_stored_and_read_back_through_the_cache(wsgi_post, token, client):
    assert client.get("/api/products/Fresh/").status_code == 404
    answer = wsgi_post({"name": "Fresh", "price": "3.10", "quantity": 2}, HTTP_AUTHORIZATION=token)
    assert answer.status_code == 201 and not answer.handled_by_django
    stored = Product.objects.get(name="Fresh")
    assert (str(stored.price), stored.quantity, stored.pk) == ("3.10", 2, answer.json()["id"])
    read = client.get("/api/products/Fresh/")
    assert read.status_code == 200
    assert read.content == answer.body
    assert read["ETag"] == answer.headers["ETag"]
    assert answer.headers["Location"] == "http://testserver/api/products/Fresh/"


def test_a_stale_cached_value_of_the_name_is_dropped_by_the_create_even_from_the_near_cache(
    wsgi_post, token, private_redis
):
    from django.db import connection

    from products import nearcache
    from products.selectors import product_json

    def read() -> bytes:
        product, allowed = counters.get_product_counted(
            "Lamp", "anon:fastcreate-test", 60, None, load=product_json
        )
        assert allowed
        return product.data

    old = Product.objects.create(name="Lamp", price="1.00", quantity=1)
    for _ in range(3):
        read()
    assert nearcache.holds("Lamp") is not None
    # Gone without an invalidation (raw SQL, as a missed one would leave it):
    # Redis and this process's near cache still hold the old product.
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM products_product WHERE id = %s", [old.pk])
    assert b'"1.00"' in read()
    answer = wsgi_post({"name": "Lamp", "price": "2.00"}, HTTP_AUTHORIZATION=token)
    assert answer.status_code == 201
    assert not answer.handled_by_django
    assert read() == answer.body


def test_the_create_invalidates_its_name_as_a_drf_create_does(wsgi_post, settings, token, monkeypatch):
    calls: list[frozenset] = []
    real = product_cache.invalidate_on_commit
    monkeypatch.setattr(
        product_cache,
        "invalidate_on_commit",
        lambda names, using=None: (calls.append(frozenset(names)), real(names, using)),
    )
    for fast, name in ((True, "one"), (False, "two")):
        settings.PRODUCT_FAST_PATH = fast
        answer = wsgi_post({"name": name, "price": "1"}, HTTP_AUTHORIZATION=token)
        assert answer.status_code == 201
        assert answer.handled_by_django is not fast
    assert calls == [frozenset({"one"}), frozenset({"two"})]


def test_one_log_line_per_create_like_djangos(wsgi_post, settings, token, caplog):
    lines = {}
    for fast in (True, False):
        settings.PRODUCT_FAST_PATH = fast
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert (
                wsgi_post({"name": f"log-{fast}", "price": "1"}, HTTP_AUTHORIZATION=token).status_code == 201
            )
        records = [r for r in caplog.records if r.name == "products.requests"]
        assert len(records) == 1
        fields = dict(records[0].request_fields)
        fields.pop("duration_ms")
        lines[fast] = fields
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert lines[True] == lines[False]


def test_the_route_metric_counts_fast_creates_like_drf_ones(wsgi_post, settings, token):
    from products import metrics

    def count() -> float:
        return metrics.REQUESTS.labels("product-list", "POST", "201")._value.get()

    before = count()
    for fast in (True, False):
        settings.PRODUCT_FAST_PATH = fast
        assert (
            wsgi_post({"name": f"metric-{fast}", "price": "1"}, HTTP_AUTHORIZATION=token).status_code == 201
        )
    assert count() == before + 2


# --- Same authentication, permissions and throttle count ---------------------------------


def test_a_revoked_permission_refuses_the_next_fast_create(wsgi_post, token, editor):
    assert not wsgi_post({"name": "before", "price": "1"}, HTTP_AUTHORIZATION=token).handled_by_django
    editor.user_permissions.remove(Permission.objects.get(codename="add_product"))
    refused = wsgi_post({"name": "after", "price": "1"}, HTTP_AUTHORIZATION=token)
    assert refused.status_code == 403
    assert refused.handled_by_django
    assert not Product.objects.filter(name="after").exists()


def test_a_deactivated_user_is_refused_at_once(wsgi_post, token, editor):
    assert wsgi_post({"name": "one", "price": "1"}, HTTP_AUTHORIZATION=token).status_code == 201
    editor.is_active = False
    editor.save()
    assert wsgi_post({"name": "two", "price": "1"}, HTTP_AUTHORIZATION=token).status_code == 401


def test_a_refused_token_counts_one_failed_login_as_with_drf(wsgi_post, settings):
    def failures() -> int:
        [name, _limit, window] = auth_limits._counters(_Meta({"REMOTE_ADDR": "127.0.0.1"}), None)[0]
        return counters.rate_counts([name], window)[0]

    counted = []
    for fast in (True, False):
        settings.PRODUCT_FAST_PATH = fast
        before = failures()
        assert wsgi_post(GOOD, HTTP_AUTHORIZATION="Token not-a-real-token").status_code == 401
        counted.append(failures() - before)
    assert counted == [1, 1]


class _Meta:
    def __init__(self, meta: dict) -> None:
        self.META = meta


def test_the_failed_login_limit_refuses_even_a_valid_token(wsgi_post, settings, token):
    settings.AUTH_FAILURE_RATE_PER_ADDRESS = "1/day"
    assert wsgi_post(GOOD, HTTP_AUTHORIZATION="Token not-a-real-token").status_code == 401
    refused = wsgi_post(GOOD, HTTP_AUTHORIZATION=token)
    assert refused.status_code == 429
    assert refused.handled_by_django


def test_fast_and_drf_creates_share_one_throttle_count_and_hand_overs_count_once(
    wsgi_post, settings, token, make_product
):
    # A day-long window, a batch of one: every request counts in Redis.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": "100/day", "user": "4/day"},
    }
    counters.reset()
    make_product(name="Taken")
    answers = [
        wsgi_post({"name": "a", "price": "1"}, HTTP_AUTHORIZATION=token),
        # Counted by the fast path, handed over, given back, counted by DRF: once.
        wsgi_post({"name": "Taken", "price": "1"}, HTTP_AUTHORIZATION=token),
        wsgi_post({"name": "b", "price": "1"}, HTTP_AUTHORIZATION=token),
    ]
    settings.PRODUCT_FAST_PATH = False
    answers.append(wsgi_post({"name": "c", "price": "1"}, HTTP_AUTHORIZATION=token))
    settings.PRODUCT_FAST_PATH = True
    refused = wsgi_post({"name": "d", "price": "1"}, HTTP_AUTHORIZATION=token)
    assert [a.status_code for a in answers] == [201, 409, 201, 201]
    assert [a.handled_by_django for a in answers] == [False, True, False, True]
    assert refused.status_code == 429
    assert refused.handled_by_django
    assert "Retry-After" in refused.headers
    assert not Product.objects.filter(name="d").exists()


@pytest.mark.django_db(transaction=True)
def test_a_name_taken_concurrently_is_a_409_from_drf(wsgi_post, token, monkeypatch):
    # Validation passed (no name query), the unique index refused the INSERT.
    from products import serializers

    Product.objects.create(name="Raced", price="1")
    monkeypatch.setattr(serializers, "name_taken", lambda *args, **kwargs: False)
    answer = wsgi_post({"name": "Raced", "price": "2"}, HTTP_AUTHORIZATION=token)
    assert answer.status_code == 409
    assert answer.handled_by_django
    assert answer.json() == {"name": ["A product with this name already exists."]}
    assert Product.objects.get(name="Raced").price == 1


def _failing_first_insert(message: str, failures: list):
    from django.db import OperationalError

    def fail_once(execute, sql, params, many, context):
        if sql.startswith("INSERT") and not failures:
            failures.append(params[0])
            raise OperationalError(message)
        return execute(sql, params, many, context)

    return fail_once


def test_a_database_error_at_the_insert_hands_the_create_to_django(wsgi_post, token):
    from django.db import connection

    failures: list = []
    with connection.execute_wrapper(_failing_first_insert("disk I/O error", failures)):
        answer = wsgi_post({"name": "retried", "price": "1"}, HTTP_AUTHORIZATION=token)
    assert failures == ["retried"]
    assert answer.handled_by_django
    assert answer.status_code == 201
    assert Product.objects.filter(name="retried").count() == 1


def test_an_insert_that_waited_out_a_lock_is_answered_503_without_a_second_wait(wsgi_post, token):
    # "database is locked" comes after SQLite's whole busy timeout (20 s; on
    # PostgreSQL, lock_timeout): Django must not run the INSERT and wait again,
    # past gunicorn's 30 s worker timeout.
    from django.db import connection

    from products.exceptions import LOCKED_MESSAGE

    failures: list = []
    inserts: list = []

    def count_inserts(execute, sql, params, many, context):
        if sql.startswith("INSERT"):
            inserts.append(sql)
        return execute(sql, params, many, context)

    with (
        connection.execute_wrapper(count_inserts),
        connection.execute_wrapper(_failing_first_insert("database is locked", failures)),
    ):
        answer = wsgi_post({"name": "waited", "price": "1"}, HTTP_AUTHORIZATION=token)
    assert failures == ["waited"] and len(inserts) == 1
    assert answer.handled_by_django
    assert answer.status_code == 503
    assert json.loads(answer.body) == {"detail": LOCKED_MESSAGE}
    assert answer.headers["Retry-After"]
    assert not Product.objects.filter(name="waited").exists()


def test_an_error_before_the_insert_hands_the_create_to_django(wsgi_post, token, caplog):
    from django.db.models.signals import pre_save

    failures = []

    def fails_once(sender, instance, **kwargs):
        if not failures:
            failures.append(instance.name)
            raise RuntimeError("a receiver's bug")

    pre_save.connect(fails_once, sender=Product, dispatch_uid="test-fails-once")
    try:
        answer = wsgi_post({"name": "handed", "price": "1"}, HTTP_AUTHORIZATION=token)
    finally:
        pre_save.disconnect(dispatch_uid="test-fails-once", sender=Product)
    assert failures == ["handed"]
    assert answer.handled_by_django  # with its own request id and log line, not a bare 500
    assert answer.status_code == 201
    assert answer.headers["X-Request-ID"]
    assert Product.objects.filter(name="handed").count() == 1
    assert "failed before its INSERT" in caplog.text


# --- Fail closed ---------------------------------------------------------------------------


def fast_create_warnings() -> list:
    from django.core.checks import run_checks

    return [m for m in run_checks() if m.id == "productsite.W002"]


def test_the_shipped_stack_runs_the_fast_create_and_check_is_quiet(wsgi_post, token):
    from productsite import fastcreate
    from productsite.wsgi import application

    assert isinstance(
        application.app.app, fastcreate.FastProductCreates
    )  # behind the proxy-header guard and the fast read
    assert fast_create_warnings() == []
    assert not wsgi_post(GOOD, HTTP_AUTHORIZATION=token).handled_by_django


@pytest.mark.parametrize("change", ["added_middleware", "perform_create", "permission_classes"])
def test_an_unmirrored_configuration_switches_fast_creates_off_and_check_says_why(
    wsgi_post, settings, token, monkeypatch, change
):
    from products.views import ProductViewSet
    from productsite import fastcreate, fastpath

    if change == "added_middleware":
        settings.MIDDLEWARE = [*fastpath.MIRRORED_MIDDLEWARE, "django.middleware.gzip.GZipMiddleware"]
    elif change == "perform_create":
        monkeypatch.setattr(ProductViewSet, "perform_create", lambda self, serializer: serializer.save())
    else:
        monkeypatch.setattr(ProductViewSet, "permission_classes", [])
    fastcreate._reset_setup()
    [warning] = fast_create_warnings()
    assert "authenticated creates is off" in warning.msg
    answer = wsgi_post(GOOD, HTTP_AUTHORIZATION=token)
    assert answer.handled_by_django
    assert answer.status_code == 201


def test_fast_create_with_redis_down_still_creates_and_records_the_invalidation(
    wsgi_post, token, private_redis
):
    from products.models import PendingInvalidation

    private_redis.kill()
    answer = wsgi_post({"name": "offline", "price": "1"}, HTTP_AUTHORIZATION=token)
    assert answer.status_code == 201
    assert Product.objects.filter(name="offline").exists()
    assert any("offline" in pending.names for pending in PendingInvalidation.objects.all())


def test_creates_survive_redis_forgetting_its_scripts(wsgi_post, token, private_redis):
    # The cached token is read in the same round trip as the failed-login
    # count; a NOSCRIPT reply there loads the script and reads again.
    assert wsgi_post({"name": "before", "price": "1"}, HTTP_AUTHORIZATION=token).status_code == 201
    private_redis.client().script_flush()
    answer = wsgi_post({"name": "after", "price": "1"}, HTTP_AUTHORIZATION=token)
    assert answer.status_code == 201
    assert not answer.handled_by_django
    private_redis.client().script_flush()
    refused = wsgi_post(GOOD, HTTP_AUTHORIZATION="Token not-a-real-token")
    assert refused.status_code == 401


def _saves_seen(wsgi_post, settings, token, fast: bool) -> tuple[list, list[str]]:
    """Create one product with the fast path on or off; return the save signals seen and the INSERTs sent."""
    from django.db import connection
    from django.db.models.signals import post_save, pre_save
    from django.test.utils import CaptureQueriesContext

    seen: list = []

    def note(name, sender, instance, **kwargs):
        kwargs.pop("signal", None)
        state = (instance.pk, instance._state.adding, instance._state.db, instance.created_at is not None)
        seen.append((name, sender, state, sorted(kwargs.items())))

    def on_pre(sender, instance, **kwargs):
        note("pre_save", sender, instance, **kwargs)

    def on_post(sender, instance, **kwargs):
        note("post_save", sender, instance, **kwargs)

    settings.PRODUCT_FAST_PATH = fast
    pre_save.connect(on_pre, sender=Product, weak=False)
    post_save.connect(on_post, sender=Product, weak=False)
    try:
        with CaptureQueriesContext(connection) as captured:
            answer = wsgi_post({"name": f"signals-{fast}", "price": "1.50"}, HTTP_AUTHORIZATION=token)
    finally:
        pre_save.disconnect(on_pre, sender=Product)
        post_save.disconnect(on_post, sender=Product)
    assert answer.status_code == 201
    assert answer.handled_by_django is not fast
    # The id differs between the two creates: compare what does not.
    pk = answer.json()["id"]
    signals = [
        (s, sender, (p == pk if p is not None else None, *rest), kw) for s, sender, (p, *rest), kw in seen
    ]
    inserts = [
        q["sql"].split(" VALUES ")[0] for q in captured.captured_queries if q["sql"].startswith("INSERT")
    ]
    return signals, inserts


def test_the_fast_create_sends_the_save_signals_and_the_insert_of_a_drf_create(wsgi_post, settings, token):
    from django.db import connection

    from productsite import fastinsert

    fast = _saves_seen(wsgi_post, settings, token, fast=True)
    # The prepared INSERT ran, not the generic save path.
    assert fastinsert._inserts[(connection.alias, connection.vendor)] is not None
    slow = _saves_seen(wsgi_post, settings, token, fast=False)
    assert fast == slow
    signals, inserts = fast
    assert [s for s, *_ in signals] == ["pre_save", "post_save"]
    assert signals[0][2] == (None, True, None, False)  # before the INSERT: new, no id, no timestamps
    assert signals[1][2] == (True, False, "default", True)  # after it: the id, saved, stamped
    assert dict(signals[1][3])["created"] is True
    assert len(inserts) == 1


def test_a_changed_save_path_saves_through_the_serializer(wsgi_post, settings, token, monkeypatch):
    from productsite import fastcreate, fastinsert

    monkeypatch.setattr(fastinsert, "_inserts", {})
    monkeypatch.setattr(
        Product, "save", lambda self, *a, **kw: super(Product, self).save(*a, **kw), raising=False
    )
    assert fastinsert.save_path_problems() == ["Product overrides save"]
    created = []
    original = fastcreate.ProductSerializer.create
    monkeypatch.setattr(
        fastcreate.ProductSerializer,
        "create",
        lambda self, attrs: created.append(attrs) or original(self, attrs),
    )
    # ProductSerializer.create overridden too: the generic path is taken on both counts.
    answer = wsgi_post({"name": "generic", "price": "1"}, HTTP_AUTHORIZATION=token)
    assert answer.status_code == 201 and not answer.handled_by_django
    assert [a["name"] for a in created] == ["generic"]
    assert set(fastinsert._inserts.values()) == {None}
