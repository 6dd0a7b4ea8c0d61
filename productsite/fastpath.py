"""Anonymous JSON reads of one product, answered in front of Django (deployment layer).

``GET /api/products/{name}/`` and ``GET /products/{name}`` from anonymous JSON
clients are most of the traffic, and the cached answer is bytes already in
Redis. :class:`FastProductReads` wraps Django's WSGI application
(productsite/wsgi.py) and answers those requests itself: one Redis round trip
counts the request against the anonymous throttle and reads the product
(:func:`products.counters.get_product_counted`), then the pre-rendered JSON goes
out with the headers the DRF view and Django's middleware would have set, or a
304 for a matching ``If-None-Match``. A miss goes through the same lease-guarded
fill as the DRF view, so no read can store a stale value.

Why a WSGI layer and not a middleware where Django puts FetchFromCacheMiddleware:
measured in docs/performance.md ("The fast path").

It fails closed. It runs only on the configuration it mirrors: ``MIDDLEWARE``
equal to :data:`MIRRORED_MIDDLEWARE`, DRF's authentication classes equal to
:data:`MIRRORED_AUTHENTICATION`, the URLconf and views it expects, and no
``PREPEND_WWW`` or ``DISALLOWED_USER_AGENTS``. On anything else it switches
itself off (every request goes to Django) and ``manage.py check`` reports why
(productsite.W001). Adding a middleware therefore never gets silently skipped:
it turns the fast path off until this module is taught the new stack.

Per request, everything it does not answer exactly as Django would goes to
Django unchanged:

* other paths and methods, and any query string (``?format=api``...);
* any ``Cookie`` or ``Authorization`` header (sessions, CSRF cookies,
  authenticated clients, the browsable API);
* a request with a body (``Content-Length`` > 0 or ``Transfer-Encoding``);
* an ``Accept`` header other than ``*/*`` or ``application/json`` (an absent
  one is fine; an empty one is a 406 from DRF);
* a NUL character in any header (a 400 from RefuseNulMiddleware), or a path
  whose bytes are not UTF-8 (its 404);
* a request over the throttle limit (DRF answers the 429 with Retry-After);
* a host not in ALLOWED_HOSTS, an ``X-Forwarded-Host`` Django would read, an
  HTTPS redirect, ``PRODUCT_FAST_PATH`` off;
* an unexpected error (logged; Django then answers, and the request may count
  twice against the throttle, which only errs towards refusing).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable

import orjson
from django.conf import settings
from django.core.handlers.wsgi import get_path_info
from django.core.signals import setting_changed
from django.db import DatabaseError, close_old_connections
from django.http.request import split_domain_port, validate_host
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings

from products import cache, counters
from products.addresses import client_address
from products.conditional import etag_matches, make_etag
from products.logfields import current_request_id, request_id
from products.middleware import log_request
from products.request_guards import path_is_undecodable
from products.selectors import compact, legacy_shape, product_json
from products.throttling import (
    AnonymousFixedWindowThrottle,
    UserFixedWindowThrottle,
    counter_name,
    parse_rate,
)
from products.validators import NAME_URL_PATTERN

logger = logging.getLogger(__name__)

# The stack whose effect on a cached product read the fast path reproduces.
# Change it only together with the code below (and the parity tests in
# products/tests/test_deployment_fastpath.py).
MIRRORED_MIDDLEWARE = (
    "products.middleware.RequestLogMiddleware",
    "products.middleware.BodySizeLimitMiddleware",
    # 400 for a NUL in the query, a cookie or a header; 404 for a path that is not
    # UTF-8: such requests are handed over.
    "products.request_guards.RefuseNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # CommonMiddleware with a 308 for writes; for a GET it is CommonMiddleware.
    "products.trailing_slash.AppendSlashMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Acts only on an exception from a login page: never on a cached read.
    "products.auth_limits.FailedLoginLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)
# Without a Cookie or Authorization header, each of these leaves the request
# anonymous; another class might not (a header or address based one).
MIRRORED_AUTHENTICATION = (
    "products.authentication.TokenAuthentication",
    "rest_framework.authentication.SessionAuthentication",
    "rest_framework.authentication.BasicAuthentication",
)

_API = re.compile(rf"/api/products/({NAME_URL_PATTERN})/")
_LEGACY = re.compile(rf"/products/({NAME_URL_PATTERN})")
JSON_ACCEPTS = frozenset(("*/*", "application/json"))  # answered here; any other Accept goes to Django
# The environ key where a fast path notes whether the request came over HTTPS.
SECURE = "productsite.fastpath.secure"
_API_ALLOW = "GET, PUT, PATCH, DELETE, HEAD, OPTIONS"
_LEGACY_ALLOW = "GET, HEAD, OPTIONS"
_NOT_FOUND = b'{"detail":"Not found."}'
_MAX_HOSTS = 64
_MAX_ANSWERS = 1024

StartResponse = Callable[[str, list[tuple[str, str]]], object]


def configuration_problems() -> list[str]:
    """Return why the current settings are not the ones the fast path mirrors (empty: they are)."""
    problems = []
    middleware = tuple(settings.MIDDLEWARE)
    if middleware != MIRRORED_MIDDLEWARE:
        added = [m for m in middleware if m not in MIRRORED_MIDDLEWARE]
        missing = [m for m in MIRRORED_MIDDLEWARE if m not in middleware]
        detail = f"added {added}, missing {missing}" if added or missing else "in another order"
        problems.append(f"MIDDLEWARE differs from productsite.fastpath.MIRRORED_MIDDLEWARE ({detail})")
    authentication = tuple(
        f"{cls.__module__}.{cls.__qualname__}" for cls in api_settings.DEFAULT_AUTHENTICATION_CLASSES
    )
    if authentication != MIRRORED_AUTHENTICATION:
        problems.append(
            "REST_FRAMEWORK['DEFAULT_AUTHENTICATION_CLASSES'] differs from "
            "productsite.fastpath.MIRRORED_AUTHENTICATION"
        )
    if settings.PREPEND_WWW:
        problems.append("PREPEND_WWW is on")
    if settings.DISALLOWED_USER_AGENTS:
        problems.append("DISALLOWED_USER_AGENTS is set")
    problems += _route_problems()
    return problems


def _route_problems() -> list[str]:
    from django.urls import Resolver404, resolve

    from products.permissions import ProductPermissions
    from products.views import LegacyProductDetailView, ProductViewSet

    try:
        api = resolve("/api/products/x/")
        legacy = resolve("/products/x")
    except Resolver404:
        return ["the URLconf does not route /api/products/<name>/ and /products/<name>"]
    problems = []
    if getattr(api.func, "cls", None) is not ProductViewSet or api.func.actions.get("get") != "retrieve":
        problems.append("/api/products/<name>/ is not ProductViewSet.retrieve")
    if getattr(legacy.func, "view_class", None) is not LegacyProductDetailView:
        problems.append("/products/<name> is not LegacyProductDetailView")
    for view in (ProductViewSet, LegacyProductDetailView):
        if list(view.permission_classes) != [ProductPermissions]:
            problems.append(f"{view.__name__} has other permission classes")
        if list(view.throttle_classes) != [AnonymousFixedWindowThrottle, UserFixedWindowThrottle]:
            problems.append(f"{view.__name__} has other throttle classes")
        if not view.renderer_classes or view.renderer_classes[0] is not JSONRenderer:
            problems.append(f"{view.__name__} does not render JSON first")
        if [c.__module__ + "." + c.__qualname__ for c in view.authentication_classes] != list(
            MIRRORED_AUTHENTICATION
        ):
            problems.append(f"{view.__name__} has other authentication classes")
    return problems


class _Setup:
    """What the fast path derives from settings; rebuilt when a setting changes.

    Read once, not per request: a ``settings.X`` costs about half a
    microsecond, and a hit reads a dozen of them.
    """

    def __init__(self) -> None:
        self.valid_hosts: dict[str, bool] = {}
        self.headers: list[tuple[str, str]] | None = None
        self.mirrored: bool | None = None
        # Answers already built, by (JSON, API route, hit, HSTS): the same
        # bytes always give the same headers and body (bounded, see _answer).
        self.answers: dict[
            tuple[bytes, bool, bool, bool], tuple[tuple[tuple[str, str], ...], bytes, str]
        ] = {}

    def enabled(self) -> bool:
        """Return True when the fast path is on and mirrors the configuration."""
        mirrored = self.mirrored
        if mirrored is None:
            mirrored = self.mirrored = self._load()
        return mirrored

    def _load(self) -> bool:
        if not settings.PRODUCT_FAST_PATH:
            return False
        problems = configuration_problems()
        if problems:
            logger.warning("Fast path off (every request goes to Django): %s", "; ".join(problems))
            return False
        self.read_settings()
        return True

    def read_settings(self) -> None:
        """Read what the answers need from the settings (bench/fastpath_mw calls it without the check)."""
        self.forwarded_host = settings.USE_X_FORWARDED_HOST
        self.ssl_redirect = settings.SECURE_SSL_REDIRECT
        self.proxy_ssl_header = settings.SECURE_PROXY_SSL_HEADER
        self.hsts = hsts_header() if settings.SECURE_HSTS_SECONDS else None
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(AnonymousFixedWindowThrottle.scope)
        self.throttle = parse_rate(rate) if rate else None
        common = self.common_headers()
        self.route_headers = {
            True: (*common, ("Allow", _API_ALLOW)),
            False: (*common, ("Allow", _LEGACY_ALLOW)),
        }

    def common_headers(self) -> list[tuple[str, str]]:
        """Return the headers the mirrored middleware adds to every response here."""
        if self.headers is None:
            headers = [("Vary", "Accept, Cookie")]
            if settings.SECURE_CONTENT_TYPE_NOSNIFF:
                headers.append(("X-Content-Type-Options", "nosniff"))
            policy = settings.SECURE_REFERRER_POLICY
            if policy:
                if not isinstance(policy, str):
                    policy = ",".join(policy)
                headers.append(("Referrer-Policy", policy))
            if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
                headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
            headers.append(("X-Frame-Options", settings.X_FRAME_OPTIONS.upper()))
            self.headers = headers
        return self.headers


_setup = _Setup()


def _reset_setup(**kwargs) -> None:
    global _setup
    _setup = _Setup()


# Connected here, not in an AppConfig.ready(): only a server process loads
# this module (productsite/wsgi.py), and a command should not load it to
# reset what it never derived.
setting_changed.connect(_reset_setup, dispatch_uid="productsite.fastpath.reset_setup")


def setup() -> _Setup:
    """Return what the fast path derived from the settings now (productsite.fastcreate shares it)."""
    return _setup


def is_secure(environ: dict, setup: _Setup) -> bool:
    """Return True when the request came over HTTPS, as Django's is_secure() would say."""
    header = setup.proxy_ssl_header
    if header:
        name, value = header
        forwarded = environ.get(name)
        if forwarded is not None:
            return forwarded.split(",", 1)[0].strip() == value
    return environ.get("wsgi.url_scheme") == "https"


def host_allowed(environ: dict, setup: _Setup) -> bool:
    """Return True when the Host header is one ALLOWED_HOSTS allows, as Django's get_host() would."""
    host = environ.get("HTTP_HOST")
    if not host:
        return False
    known = setup.valid_hosts.get(host)
    if known is None:
        allowed = settings.ALLOWED_HOSTS
        if settings.DEBUG and not allowed:
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        domain, _port = split_domain_port(host)
        known = bool(domain and validate_host(domain, allowed))
        if len(setup.valid_hosts) < _MAX_HOSTS:  # hosts come from clients: bound the memo
            setup.valid_hosts[host] = known
    return known


class FastProductReads:
    """WSGI middleware: answer anonymous JSON product reads, hand the rest to ``app``."""

    def __init__(self, app: Callable[[dict, StartResponse], Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        setup = _setup  # one setup per request, even if a setting change replaces it meanwhile
        match = self.match(environ, setup) if setup.enabled() else None
        if match is not None:
            started = time.perf_counter()
            # What is logged meanwhile (Redis unavailable...) names the request;
            # handed to Django, the request keeps this id.
            rid = environ["HTTP_X_REQUEST_ID"] = request_id(environ.get("HTTP_X_REQUEST_ID"))
            serving = current_request_id.set(rid)
            try:
                answer = self.answer(environ, *match, setup)
            except DatabaseError:
                # The database is down: Django's answer (a 503) logs it, once.
                answer = None
            except Exception:
                logger.exception("Fast product read failed; handing the request to Django")
                answer = None
            finally:
                current_request_id.reset(serving)
            if answer is not None:
                status, headers, body, x_cache = answer
                start_response(status, [*headers, ("X-Request-ID", rid)])
                log_request(
                    "GET",
                    environ.get("SCRIPT_NAME", "") + match[2],
                    status[:3],
                    started,
                    x_cache,
                    request_id=rid,
                    route="product-detail" if match[1] else "legacy-product-detail",
                )
                return [body]
        return self.app(environ, start_response)

    def match(self, environ: dict, setup: _Setup) -> tuple[str, bool, str] | None:
        """Return (name, is_api_route, path) when this request is ours to answer (``setup`` enabled)."""
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING"):
            return None
        if "HTTP_AUTHORIZATION" in environ or environ.get("HTTP_COOKIE"):
            return None
        if environ.get("CONTENT_LENGTH", "0") not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ:
            return None
        accept = environ.get("HTTP_ACCEPT")
        if accept is not None and accept not in JSON_ACCEPTS:
            return None
        if setup.forwarded_host and "HTTP_X_FORWARDED_HOST" in environ:
            return None
        if any("\x00" in value for key, value in environ.items() if key.startswith("HTTP_")):
            return None  # RefuseNulMiddleware answers 400
        path = get_path_info(environ) or "/"
        if "%" in path and path_is_undecodable(environ):
            return None  # bytes that are not UTF-8, re-percent-encoded: RefuseNulMiddleware's 404
        api = _API.fullmatch(path)
        found = api or _LEGACY.fullmatch(path)
        if found is None or not host_allowed(environ, setup):
            return None
        secure = is_secure(environ, setup)
        if setup.ssl_redirect and not secure:
            return None
        environ[SECURE] = secure
        return found.group(1), api is not None, path

    def answer(self, environ: dict, name: str, api: bool, path: str, setup: _Setup):
        """Return (status, headers, body, x_cache), or None to let Django answer."""
        if setup.throttle:
            limit, window = setup.throttle
            counter = counter_name(AnonymousFixedWindowThrottle.scope, client_address(environ))
            product, allowed = counters.get_product_counted(name, counter, window, limit, load=_load_product)
            if not allowed:
                return None  # DRF answers the 429, with Retry-After
        else:
            product = cache.get_product(name, _load_product)
        hsts = setup.hsts is not None and environ[SECURE]
        if product is None:
            headers = [*setup.route_headers[api]]
            if hsts:
                headers.append(("Strict-Transport-Security", setup.hsts))
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(_NOT_FOUND)))]
            return "404 Not Found", headers, _NOT_FOUND, "-"
        x_cache = "HIT" if product.hit else "MISS"
        headers, body, etag = _answer(setup, product.data, api, product.hit, hsts)
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if if_none_match and etag_matches(if_none_match, etag):
            # The 200's headers up to X-Cache, then no body.
            return "304 Not Modified", [*headers[:-2], ("Content-Length", "0")], b"", x_cache
        return "200 OK", headers, body, x_cache


def _answer(
    setup: _Setup, data: bytes, api: bool, hit: bool, hsts: bool
) -> tuple[tuple[tuple[str, str], ...], bytes, str]:
    """Return the 200's headers (without X-Request-ID), body and ETag for a product's JSON."""
    key = (data, api, hit, hsts)
    found = setup.answers.get(key)
    if found is not None:
        return found
    headers = list(setup.route_headers[api])
    if hsts:
        headers.append(("Strict-Transport-Security", setup.hsts))
    etag = make_etag(data)
    body = data if api else _legacy_body(data)
    headers += [
        ("ETag", etag),
        ("X-Cache", "HIT" if hit else "MISS"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
    ]
    found = (tuple(headers), body, etag)
    if len(setup.answers) >= _MAX_ANSWERS:  # a random walk over the catalogue: start afresh
        setup.answers.clear()
    setup.answers[key] = found
    return found


def _legacy_body(data: bytes) -> bytes:
    """Return the original service's body for a product's JSON (the same bytes give the same body).

    Built once per product JSON: :func:`_answer` keeps it in the answers memo,
    copied to its own size rather than orjson's 4 KiB buffer.
    """
    body = orjson.dumps(legacy_shape(orjson.loads(data)))
    # DRF's JSONRenderer, which answers the same route inside Django, escapes
    # these two (valid JSON, not valid JavaScript); so must this.
    return compact(body.replace(_LINE_SEPARATOR, rb"\u2028").replace(_PARAGRAPH_SEPARATOR, rb"\u2029"))


_LINE_SEPARATOR = "\u2028".encode()
_PARAGRAPH_SEPARATOR = "\u2029".encode()


def _load_product(name: str) -> bytes | None:
    """Read a product from the database on a miss."""
    # Only a miss touches the database. Django closes a broken or aged
    # connection at each request's start (close_old_connections, on
    # request_started); do the same before this read. A hit skips it, as it
    # never uses the connection, and calling the receiver directly is far
    # cheaper than sending both request signals (docs/performance.md).
    close_old_connections()
    return product_json(name)


def hsts_header() -> str:
    """Return the Strict-Transport-Security value Django's SecurityMiddleware would send."""
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return value
