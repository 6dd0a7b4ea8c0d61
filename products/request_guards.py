"""Refuse a NUL character in a query parameter, cookie or header, before anything reads it.

PostgreSQL cannot store NUL in text and answers any query carrying one with
an error (psycopg's DataError: a 500). No product, user, session or token
contains one, so a request that sends one in a place the service may look
up (``?search=``, the admin's filters, the session cookie...) is bad input:
400. Credentials hidden inside ``Authorization`` (Basic auth's base64) are
refused by products.authentication instead, as failed logins.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from django.http import HttpResponseBadRequest, JsonResponse

from .exceptions import is_api_path


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


class RefuseNulMiddleware:
    """Answer 400 for a NUL in the query string, a cookie or a header."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        where = _where_nul(request.META)
        if where is None:
            return self.get_response(request)
        detail = f"Bad request: {where} contains a NUL character."
        if is_api_path(request.path):
            return JsonResponse({"detail": detail}, status=400)
        return HttpResponseBadRequest(detail, content_type="text/plain; charset=utf-8")
