"""How the product views answer: ETags, Location, cached bytes, JSON written by orjson.

Shared by products.views and the fast create (productsite.fastcreate).
"""

from __future__ import annotations

import hashlib

import orjson
from django.http import HttpResponse
from django.middleware.csrf import get_token
from django.utils.cache import patch_vary_headers
from django.utils.http import parse_header_parameters
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from . import cache
from .conditional import etag_matches, make_etag
from .validators import keep_dot_segments


def etag_of(representation: dict) -> str:
    return make_etag(orjson.dumps(representation))


def product_location(request: Request, viewname: str, name: str) -> str:
    """Return the absolute URL of a product, for a Location header."""
    return request.build_absolute_uri(keep_dot_segments(reverse(viewname, kwargs={"name": name})))


def html_etag(json_etag: str, request: Request) -> str:
    """Return the browsable API page's validator for a product whose JSON has ``json_etag``.

    Each representation needs its own tag, or a browser holding the JSON's
    tag would get a 304 for the HTML page (and show the JSON it cached).
    The page also depends on who asks (the navbar, the edit forms) and on
    the session's CSRF secret (its forms' token; Django rotates it at every
    login): a browser that just logged in would otherwise get a 304 and show
    a page it cached before, whose forms then fail the CSRF check. Weak: the
    token is masked anew at each rendering, so two renderings are equivalent
    but not byte-identical.
    """
    user = getattr(request, "user", None)
    who = f"u{user.pk}" if user is not None and user.is_authenticated else "anon"
    get_token(request)  # the secret the page's forms will carry (made now if the client has none)
    secret = hashlib.blake2b((request.META.get("CSRF_COOKIE") or "").encode(), digest_size=6).hexdigest()
    return 'W/"' + json_etag.strip('"') + f'-html-{who}-{secret}"'


def cached_product_response(request: Request, cached: cache.CachedProduct, shape=None, html_data=None):
    """Answer a product read: 304, pre-rendered JSON bytes, or the browsable API.

    ``html_data`` builds the browsable API's body instead of the cached dict
    (a serializer's data, so DRF pre-fills its edit form from the instance).
    """
    html = request.accepted_renderer.format == "api"
    etag = html_etag(cached.etag, request) if html else cached.etag
    if etag_matches(request.headers.get("If-None-Match"), etag):
        response = HttpResponse(status=status.HTTP_304_NOT_MODIFIED)
        del response["Content-Type"]  # a 304 has no body to describe
    elif shape is None and request.accepted_renderer.format == "json":
        # The cached bytes are already the JSON body: no serializer, no renderer.
        response = HttpResponse(cached.data, content_type="application/json")
    elif html_data is not None and html:
        response = Response(html_data())
    else:
        data = orjson.loads(cached.data)
        response = Response(shape(data) if shape else data)
    response["ETag"] = etag
    response["X-Cache"] = "HIT" if cached.hit else "MISS"
    patch_vary_headers(response, ["Accept", "Cookie"] if html else ["Accept"])
    return response


def plain_json_response(request: Request, data: dict) -> HttpResponse:
    """Answer ``data`` as DRF's JSONRenderer would write it, written by orjson.

    For data of strings, integers, None, lists and dicts only (a list page):
    for those, orjson's bytes are the compact, non-ASCII ``json.dumps`` DRF
    writes, U+2028 and U+2029 escaped as DRF escapes them
    (test_list_representation.py compares the two). Any other renderer, an
    ``indent`` asked for in Accept, or DRF's JSON settings changed
    (COMPACT_JSON, UNICODE_JSON): DRF renders it.
    """
    renderer = request.accepted_renderer
    if (
        type(renderer) is not JSONRenderer
        or not renderer.compact
        or renderer.ensure_ascii
        or "indent" in parse_header_parameters(request.accepted_media_type or "")[1]
    ):
        return Response(data)
    body = orjson.dumps(data)
    if b"\xe2\x80\xa8" in body or b"\xe2\x80\xa9" in body:
        body = body.replace("\u2028".encode(), b"\\u2028").replace("\u2029".encode(), b"\\u2029")
    return HttpResponse(body, content_type=renderer.media_type)
