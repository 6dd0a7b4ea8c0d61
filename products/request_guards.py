"""Refuse a NUL character in a query parameter, cookie or header, before anything reads it.

And answer 404 for a path that names nothing: one with a NUL (the admin's
``/admin/r/<type>/<id>/`` would look the id up: a 500 on PostgreSQL) or with
bytes that are not UTF-8. Django re-percent-encodes such bytes
(``/api/products/%FF/`` reaches the view as the name ``%FF``), so the
request would read, or write, the product literally named ``%FF``;
:class:`MarkUndecodablePaths` (productsite/wsgi.py) notes them first.

PostgreSQL cannot store NUL in text and answers any query carrying one with
an error (psycopg's DataError: a 500). No product, user, session or token
contains one, so a request that sends one in a place the service may look
up (``?search=``, the admin's filters, the session cookie...) is bad input:
400. Credentials hidden inside ``Authorization`` (Basic auth's base64) are
refused by products.authentication instead, as failed logins.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import unquote_to_bytes

from django.core.handlers.exception import response_for_exception
from django.http import Http404, HttpResponseBadRequest, JsonResponse

from .addresses import is_trusted_proxy
from .exceptions import as_every_page, is_api_path


def _where_nul(meta: dict) -> str | None:
    query = meta.get("QUERY_STRING", "")
    if query and b"\x00" in unquote_to_bytes(query.replace("+", " ")):
        return "the query string"
    for key, value in meta.items():
        if not key.startswith("HTTP_") or not isinstance(value, str):
            continue
        if key == "HTTP_COOKIE" and ("\x00" in value or "\\000" in value):
            # "\000" is how a quoted cookie value spells NUL (http.cookies decodes it).
            return "the Cookie header"
        if "\x00" in value:
            return "a header"
    return None


UNDECODABLE_PATH = "products.request_guards.undecodable_path"  # the environ's mark


def path_is_undecodable(environ: dict) -> bool:
    """Return True when a WSGI environ's path is bytes that are not UTF-8 (read before Django rewrites it)."""
    try:
        environ.get("PATH_INFO", "").encode("iso-8859-1").decode("utf-8")  # PEP 3333: bytes as latin-1
    except UnicodeError:
        return True
    return False


class MarkUndecodablePaths:
    """WSGI middleware: mark a path that is not UTF-8, for :class:`RefuseNulMiddleware`.

    Django's WSGIRequest replaces ``PATH_INFO`` with its re-percent-encoded
    form, after which ``/api/products/%FF/`` and ``/api/products/%25FF/``
    look the same; only the WSGI layer still sees the difference.
    """

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response):
        if path_is_undecodable(environ):
            environ[UNDECODABLE_PATH] = True
        return self.app(environ, start_response)


class DropUntrustedProxyHeaders:
    """WSGI middleware: drop ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` from a peer outside FORWARDED_ALLOW_IPS.

    Django believes them from anyone once ``USE_X_FORWARDED_PROTO`` /
    ``USE_X_FORWARDED_HOST`` are on (SECURE_PROXY_SSL_HEADER): a client that
    reached gunicorn directly could skip the HTTPS redirect and be treated
    as secure. Only the proxies whose ``X-Forwarded-For`` is believed
    (products.addresses) may say how the client connected. Outermost in
    productsite/wsgi.py, so the fast paths see what Django sees.
    """

    HEADERS = ("HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST")

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response):
        # On every request, a cached read's included: two lookups, no more.
        if ("HTTP_X_FORWARDED_PROTO" in environ or "HTTP_X_FORWARDED_HOST" in environ) and not self._trusted(
            environ.get("REMOTE_ADDR") or ""
        ):
            for header in self.HEADERS:
                environ.pop(header, None)
        return self.app(environ, start_response)

    @staticmethod
    def _trusted(peer: str) -> bool:
        try:
            ipaddress.ip_address(peer)
        except ValueError:
            # No address: a Unix socket (GUNICORN_BIND=unix:...), which only
            # this host's processes reach and whose proxy gunicorn trusts too.
            return True
        return is_trusted_proxy(peer)


class RefuseNulMiddleware:
    """Answer 400 for a NUL in the query string, a cookie or a header; 404 for a path naming nothing."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path_info or request.META.get(UNDECODABLE_PATH):
            # Django's 404 page; JSON under /api/.
            return as_every_page(request, response_for_exception(request, Http404("No such page.")))
        where = _where_nul(request.META)
        if where is None:
            return self.get_response(request)
        detail = f"Bad request: {where} contains a NUL character."
        if is_api_path(request.path_info):
            return as_every_page(request, JsonResponse({"detail": detail}, status=400))
        return as_every_page(
            request, HttpResponseBadRequest(detail, content_type="text/plain; charset=utf-8")
        )
