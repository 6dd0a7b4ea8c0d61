"""Throttling: 429 with Retry-After, shared counters across processes, fail-open."""

from __future__ import annotations

import logging
import uuid

import pytest
import requests
from django.conf import settings as django_settings

pytestmark = pytest.mark.django_db


@pytest.fixture
def rates(settings):
    def set_rates(anon: str, user: str) -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {"anon": anon, "user": user},
        }

    return set_rates


def test_anonymous_client_gets_429_with_retry_after(anon_client, rates):
    rates("3/hour", "100/hour")
    codes = [anon_client.get("/api/products/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = anon_client.get("/api/products/")
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 3600
    assert "throttled" in response.json()["detail"]


def test_users_are_counted_per_user_not_per_address(editor_client, plain_client, rates):
    rates("1/hour", "2/hour")
    assert [editor_client.get("/api/products/").status_code for _ in range(3)] == [200, 200, 429]
    # Another user from the same address has a budget of its own.
    assert plain_client.get("/api/products/").status_code == 200


def test_throttling_fails_open_and_says_so_when_redis_is_down(anon_client, rates, private_redis, caplog):
    # Each test starts with throttling.reset() (conftest): the warning is due.
    rates("1/hour", "1/hour")
    assert anon_client.get("/api/products/").status_code == 200
    assert anon_client.get("/api/products/").status_code == 429
    private_redis.stop()
    with caplog.at_level(logging.WARNING, logger="products.throttling"):
        codes = [anon_client.get("/api/products/").status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    lines = [r.getMessage() for r in caplog.records if r.name == "products.throttling"]
    assert len(lines) == 1 and "throttle=fail_open" in lines[0]


@pytest.mark.slow
def test_counters_are_shared_by_gunicorn_workers_and_rates_come_from_the_environment(sqlite_gunicorn):
    # A key prefix of its own (under the run's, so the session cleanup finds
    # it): no other test's requests from 127.0.0.1 count against this budget.
    prefix = f"{django_settings.CACHES['default']['KEY_PREFIX']}:throttle-{uuid.uuid4().hex[:6]}"
    server = sqlite_gunicorn(workers=2, THROTTLE_ANON_RATE="6/hour", CACHE_KEY_PREFIX=prefix)
    codes = []
    for _ in range(10):
        # A new connection each time, so requests spread over both workers.
        response = requests.get(server.url + "/api/products/", headers={"Connection": "close"}, timeout=5)
        codes.append(response.status_code)
    assert codes == [200] * 6 + [429] * 4
    retry = requests.get(server.url + "/api/products/", timeout=5)
    assert retry.status_code == 429 and int(retry.headers["Retry-After"]) > 0


DIRECT = "198.51.100.20"  # a client connecting from outside, not a trusted proxy
PROXY = "10.0.0.5"


@pytest.mark.parametrize("url", ["/api/products/", "/api/products/Mug/"], ids=["drf", "fast_path"])
def test_a_forged_forwarded_for_header_does_not_reset_the_budget(anon_client, rates, url, make_product):
    make_product("Mug")
    rates("2/hour", "100/hour")
    codes = [
        anon_client.get(url, REMOTE_ADDR=DIRECT, HTTP_X_FORWARDED_FOR=f"10.0.0.{i}").status_code
        for i in range(3)
    ]
    assert codes == [200, 200, 429]


def test_behind_a_trusted_proxy_the_client_is_the_address_the_proxy_appended(anon_client, rates, settings):
    rates("1/hour", "100/hour")
    settings.FORWARDED_ALLOW_IPS = ("10.0.0.0/8",)

    def get(header: str) -> int:
        return anon_client.get("/api/products/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=header).status_code

    first = get("1.1.1.1, 203.0.113.7")
    other = get("203.0.113.8")
    again = get("9.9.9.9, 203.0.113.7")
    # Two trusted hops (the proxy's own address, then another of ours) are skipped.
    chained = get("5.5.5.5, 203.0.113.7, 10.1.2.3")
    assert [first, other, again, chained] == [200, 200, 429, 429]


def test_client_address_rule():
    from django.test import override_settings

    from products.addresses import client_address

    with override_settings(FORWARDED_ALLOW_IPS=("127.0.0.1", "::1")):
        assert client_address({"REMOTE_ADDR": DIRECT, "HTTP_X_FORWARDED_FOR": "1.2.3.4"}) == DIRECT
        assert client_address({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}) == "1.2.3.4"
        assert client_address({"REMOTE_ADDR": "::1", "HTTP_X_FORWARDED_FOR": "x, 1.2.3.4"}) == "1.2.3.4"
        # Unreadable client part: the last hop we could read stands for it.
        assert client_address({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "junk"}) == "127.0.0.1"
        # gunicorn bound to [::]: an IPv4 proxy's address arrives IPv4-mapped.
        mapped = {"REMOTE_ADDR": "::ffff:127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}
        assert client_address(mapped) == "1.2.3.4"
    with override_settings(FORWARDED_ALLOW_IPS=()):
        assert client_address({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}) == "127.0.0.1"
    with override_settings(FORWARDED_ALLOW_IPS=("*",)):
        assert client_address({"REMOTE_ADDR": DIRECT, "HTTP_X_FORWARDED_FOR": "1.2.3.4"}) == "1.2.3.4"
        # "*": the proxy's own hop only; the client wrote the rest.
        rotated = {"REMOTE_ADDR": DIRECT, "HTTP_X_FORWARDED_FOR": "10.2.0.7, 198.51.100.7"}
        assert client_address(rotated) == "198.51.100.7"
        assert client_address({"REMOTE_ADDR": DIRECT, "HTTP_X_FORWARDED_FOR": "1.2.3.4, junk"}) == DIRECT


@pytest.mark.slow
def test_a_live_server_that_trusts_no_proxy_ignores_forwarded_for(sqlite_gunicorn):
    prefix = f"{django_settings.CACHES['default']['KEY_PREFIX']}:xff-{uuid.uuid4().hex[:6]}"
    server = sqlite_gunicorn(
        workers=2, THROTTLE_ANON_RATE="10/hour", CACHE_KEY_PREFIX=prefix, FORWARDED_ALLOW_IPS=""
    )
    codes = [
        requests.get(
            server.url + "/api/products/",
            headers={"X-Forwarded-For": f"203.0.113.{i}", "Connection": "close"},
            timeout=5,
        ).status_code
        for i in range(40)
    ]
    assert codes == [200] * 10 + [429] * 30


@pytest.mark.slow
@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
def test_only_a_trusted_proxy_may_say_the_client_came_over_https(sqlite_gunicorn, trusted):
    # With USE_X_FORWARDED_PROTO, Django believed X-Forwarded-Proto from
    # anyone: a client reaching gunicorn directly skipped the HTTPS redirect.
    server = sqlite_gunicorn(
        workers=1, FORWARDED_ALLOW_IPS=trusted, USE_X_FORWARDED_PROTO="1", SECURE_SSL_REDIRECT="1"
    )
    # Through Django, and the fast path's two read routes.
    for path, status in (("/api/products/", 200), ("/api/products/Mug/", 404), ("/products/Mug", 404)):
        answer = requests.get(
            server.url + path, headers={"X-Forwarded-Proto": "https"}, allow_redirects=False, timeout=5
        )
        if trusted:
            assert answer.status_code == status, (path, answer.status_code)
        else:
            assert answer.status_code == 301, (path, answer.status_code)
            assert answer.headers["Location"] == f"https://127.0.0.1:{server.port}{path}"


@pytest.mark.parametrize(
    "peer, kept",
    [("127.0.0.1", True), ("::ffff:127.0.0.1", True), ("203.0.113.9", False), ("", True)],
    ids=["trusted", "trusted-ipv4-mapped", "untrusted", "unix-socket"],
)
def test_proxy_headers_reach_the_application_from_trusted_peers_only(settings, peer, kept):
    from products.request_guards import DropUntrustedProxyHeaders

    settings.FORWARDED_ALLOW_IPS = ["127.0.0.1", "::1"]
    seen = {}
    guard = DropUntrustedProxyHeaders(lambda environ, start_response: seen.update(environ))
    headers = {"HTTP_X_FORWARDED_PROTO": "https", "HTTP_X_FORWARDED_HOST": "shop.example"}
    guard({"REMOTE_ADDR": peer, **headers}, None)
    assert all((name in seen) is kept for name in headers)


def test_a_malformed_forwarded_allow_ips_stops_startup():
    from .support.processes import manage, server_env

    result = manage(server_env(FORWARDED_ALLOW_IPS="10.0.0.0/33"), "check")
    assert result.returncode != 0
    assert "FORWARDED_ALLOW_IPS='10.0.0.0/33'" in result.stderr


def test_a_malformed_rate_in_the_environment_stops_startup():
    from .support.processes import manage, server_env

    result = manage(server_env(THROTTLE_ANON_RATE="lots"), "check")
    assert result.returncode != 0
    assert "THROTTLE_ANON_RATE='lots' is not a rate" in result.stderr


@pytest.mark.parametrize("name", ["AUTH_FAILURE_RATE_PER_ADDRESS", "AUTH_FAILURE_RATE_PER_USERNAME"])
def test_a_failed_sign_in_rate_of_zero_stops_startup(name):
    # 0 allowed failures would refuse every sign-in before its password is checked.
    from .support.processes import manage, server_env

    result = manage(server_env(**{name: "0/hour"}), "check")
    assert result.returncode != 0
    assert f"{name}='0/hour': the count must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_request_rate_of_zero_is_accepted_and_refuses_every_such_request(anon_client, editor_client, rates):
    from .support.processes import manage, server_env

    assert manage(server_env(THROTTLE_ANON_RATE="0/minute"), "check").returncode == 0
    rates("0/minute", "100/hour")  # anonymous access closed, editors unaffected
    assert anon_client.get("/api/products/").status_code == 429
    assert editor_client.get("/api/products/").status_code == 200
