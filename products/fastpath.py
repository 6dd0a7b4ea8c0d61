"""Anonymous JSON reads of one product, answered before Django's machinery.

``GET /api/products/{name}/`` and ``GET /products/{name}`` from anonymous JSON
clients are most of the traffic, and the cached answer is bytes already in
Redis. :class:`FastProductReads` wraps Django's WSGI application
(productsite/wsgi.py) and answers those requests itself: one Redis round trip
counts the request against the anonymous throttle and reads the product
(:func:`products.counters.get_product_counted`), then the pre-rendered JSON goes
out with the headers the DRF view and Django's middleware would have set
(ETag, X-Cache, Vary, Allow, the security headers), or a 304 for a matching
``If-None-Match``. A miss goes through the same lease-guarded fill as the DRF
view, so no read can store a stale value.

Everything else is handed to Django unchanged, which keeps the rules in one
place (the DRF views):

* other paths and methods, and any query string (``?format=api``...);
* an ``Authorization`` header or a session cookie (authenticated clients,
  the browsable API);
* an ``Accept`` header other than none, ``*/*`` or ``application/json``;
* a request over the throttle limit (DRF answers the 429 with Retry-After);
* a host not in ALLOWED_HOSTS, an HTTPS redirect, settings the fast path does
  not mirror (X-Forwarded-Host, PREPEND_WWW, DISALLOWED_USER_AGENTS), a view
  configured with other throttles or renderers, ``PRODUCT_FAST_PATH`` off;
* an unexpected error (logged; Django then answers, and the request may count
  twice against the throttle, which only errs towards refusing).
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterable

import orjson
from django.conf import settings
from django.core.handlers.wsgi import get_path_info
from django.core.signals import setting_changed
from django.db import close_old_connections
from django.http.request import split_domain_port, validate_host
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings

from . import cache, counters
from .addresses import client_address
from .conditional import etag_matches
from .middleware import log_request
from .selectors import product_json, seed_shape
from .throttling import AnonRateThrottle, UserRateThrottle, counter_name, parse_rate

logger = logging.getLogger(__name__)
django_request_logger = logging.getLogger("django.request")

# The URLconf's name pattern: no "/", no control characters.
_NAME = r"([^/\x00-\x1f\x7f-\x9f]+)"
_API = re.compile(rf"/api/products/{_NAME}/")
_SEED = re.compile(rf"/products/{_NAME}")
_JSON_ACCEPTS = frozenset(("", "*/*", "application/json"))
_API_ALLOW = "GET, PUT, PATCH, DELETE, HEAD, OPTIONS"
_SEED_ALLOW = "GET, HEAD, OPTIONS"
_NOT_FOUND = b'{"detail":"Not found."}'
_MAX_HOSTS = 64

StartResponse = Callable[[str, list[tuple[str, str]]], object]


class _Setup:
    """What the fast path derives from settings; rebuilt when a setting changes."""

    def __init__(self) -> None:
        self.valid_hosts: dict[str, bool] = {}
        self.headers: list[tuple[str, str]] | None = None
        self.routes_ok: bool | None = None

    def common_headers(self) -> list[tuple[str, str]]:
        """Return the headers Django's middleware adds to every response here."""
        if self.headers is None:
            headers = [("Vary", "Accept, Cookie")]
            middleware = settings.MIDDLEWARE
            if "django.middleware.security.SecurityMiddleware" in middleware:
                if settings.SECURE_CONTENT_TYPE_NOSNIFF:
                    headers.append(("X-Content-Type-Options", "nosniff"))
                policy = settings.SECURE_REFERRER_POLICY
                if policy:
                    if not isinstance(policy, str):
                        policy = ",".join(policy)
                    headers.append(("Referrer-Policy", policy))
                if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
                    headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
            if "django.middleware.clickjacking.XFrameOptionsMiddleware" in middleware:
                headers.append(("X-Frame-Options", getattr(settings, "X_FRAME_OPTIONS", "DENY").upper()))
            self.headers = headers
        return self.headers

    def routes_match(self) -> bool:
        """Return True when the URLconf and views are the ones this path mirrors."""
        if self.routes_ok is None:
            self.routes_ok = _routes_match()
        return self.routes_ok


def _routes_match() -> bool:
    from django.urls import Resolver404, resolve

    from .views import ProductViewSet, SeedProductDetailView

    try:
        api = resolve("/api/products/x/")
        seed = resolve("/products/x")
    except Resolver404:
        return False
    if getattr(api.func, "cls", None) is not ProductViewSet or api.func.actions.get("get") != "retrieve":
        return False
    if getattr(seed.func, "view_class", None) is not SeedProductDetailView:
        return False
    for view in (ProductViewSet, SeedProductDetailView):
        if list(view.throttle_classes) != [AnonRateThrottle, UserRateThrottle]:
            return False
        if not view.renderer_classes or view.renderer_classes[0] is not JSONRenderer:
            return False
    return True


_setup = _Setup()


def _reset_setup(**kwargs) -> None:
    global _setup
    _setup = _Setup()


setting_changed.connect(_reset_setup, dispatch_uid="products.fastpath.reset_setup")


def _is_secure(environ: dict) -> bool:
    header = settings.SECURE_PROXY_SSL_HEADER
    if header:
        name, value = header
        forwarded = environ.get(name)
        if forwarded is not None:
            return forwarded.split(",", 1)[0].strip() == value
    return environ.get("wsgi.url_scheme") == "https"


def _host_allowed(environ: dict, setup: _Setup) -> bool:
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
        match = self._match(environ)
        if match is not None:
            started = time.perf_counter()
            try:
                answer = self._answer(environ, *match)
            except Exception:
                logger.exception("Fast product read failed; handing the request to Django")
                answer = None
            if answer is not None:
                status, headers, body, x_cache = answer
                start_response(status, headers)
                log_request("GET", environ.get("SCRIPT_NAME", "") + match[2], status[:3], started, x_cache)
                return [body]
        return self.app(environ, start_response)

    def _match(self, environ: dict) -> tuple[str, bool, str] | None:
        """Return (name, is_api_route, path) when this request is ours to answer."""
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING"):
            return None
        if "HTTP_AUTHORIZATION" in environ or environ.get("HTTP_ACCEPT", "") not in _JSON_ACCEPTS:
            return None
        if not getattr(settings, "PRODUCT_FAST_PATH", True):
            return None
        cookies = environ.get("HTTP_COOKIE")
        if cookies and settings.SESSION_COOKIE_NAME in cookies:
            return None
        path = get_path_info(environ) or "/"
        api = _API.fullmatch(path)
        found = api or _SEED.fullmatch(path)
        if found is None:
            return None
        setup = _setup
        if (
            settings.USE_X_FORWARDED_HOST
            or settings.PREPEND_WWW
            or settings.DISALLOWED_USER_AGENTS
            or not _host_allowed(environ, setup)
            or not setup.routes_match()
        ):
            return None
        secure = _is_secure(environ)
        if settings.SECURE_SSL_REDIRECT and not secure:
            return None
        environ["products.fastpath.secure"] = secure
        return found.group(1), api is not None, path

    def _answer(self, environ: dict, name: str, api: bool, path: str):
        """Return (status, headers, body, x_cache), or None to let Django answer."""
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(AnonRateThrottle.scope)
        if rate:
            limit, window = parse_rate(rate)
            counter = counter_name(AnonRateThrottle.scope, client_address(environ))
            product, allowed = counters.get_product_counted(name, counter, window, limit, load=_load_product)
            if not allowed:
                return None  # DRF answers the 429, with Retry-After
        else:
            product = cache.get_product(name, _load_product)
        headers = [*_setup.common_headers(), ("Allow", _API_ALLOW if api else _SEED_ALLOW)]
        if environ["products.fastpath.secure"] and settings.SECURE_HSTS_SECONDS:
            headers.append(("Strict-Transport-Security", _hsts()))
        if product is None:
            django_request_logger.warning("Not Found: %s", path, extra={"status_code": 404})
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(_NOT_FOUND)))]
            return "404 Not Found", headers, _NOT_FOUND, "-"
        etag = product.etag
        x_cache = "HIT" if product.hit else "MISS"
        headers += [("ETag", etag), ("X-Cache", x_cache)]
        if etag_matches(environ.get("HTTP_IF_NONE_MATCH"), etag):
            headers.append(("Content-Length", "0"))
            return "304 Not Modified", headers, b"", x_cache
        body = product.data if api else _seed_body(product.data)
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        return "200 OK", headers, body, x_cache


@functools.lru_cache(maxsize=1024)
def _seed_body(data: bytes) -> bytes:
    """Return the original service's body for a product's JSON (the same bytes give the same body)."""
    return orjson.dumps(seed_shape(orjson.loads(data)))


def _load_product(name: str) -> bytes | None:
    """Read a product from the database on a miss."""
    # Only a miss touches the database. Django closes a broken or aged
    # connection at each request's start (close_old_connections, on
    # request_started); do the same before this read. A hit skips it, as it
    # never uses the connection. Calling the receiver directly costs 3 us
    # where sending both request signals costs 20.
    close_old_connections()
    return product_json(name)


def _hsts() -> str:
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return value
