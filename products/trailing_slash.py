"""APPEND_SLASH that never turns a write into a silent no-op.

Django's CommonMiddleware answers a URL missing its trailing slash with a 301
(and, under DEBUG, raises RuntimeError for POST/PUT/PATCH/DELETE). Clients
that follow a 301 drop the body (HTTPie, requests, browsers; RFC 9110 15.4.2
lets them turn a POST into a GET), so ``PATCH /api/products/Mug`` was re-sent
as a PATCH with no body and answered 200 with nothing changed. A 308 obliges
the client to repeat the same method with the same body (RFC 9110 15.4.9):
the write is applied, or the client refuses to follow and the caller sees
the 308.
"""

from __future__ import annotations

from django.http.response import HttpResponseRedirectBase
from django.middleware.common import CommonMiddleware
from django.utils.http import escape_leading_slashes

from .exceptions import is_api_path
from .validators import keep_dot_segments

# Methods a 301 may redirect as they are (no body to lose).
_BODYLESS = frozenset({"GET", "HEAD"})


class HttpResponsePermanentRedirectSameMethod(HttpResponseRedirectBase):
    status_code = 308


class AppendSlashMiddleware(CommonMiddleware):
    """CommonMiddleware whose slash redirect is a 308 for everything but GET and HEAD."""

    def get_full_path_with_slash(self, request) -> str:
        # Django's version raises RuntimeError under DEBUG for writes, because
        # it can only 301; a 308 keeps the body, so no need.
        path, mark, query = request.get_full_path(force_append_slash=True).partition("?")
        # A product named "." or "..": sent as %2E, Django decodes it, and a
        # Location with a bare "." or ".." segment would send the client to
        # another resource (clients resolve dot segments: "../" is the API root).
        return escape_leading_slashes(keep_dot_segments(path) + mark + query)

    def process_request(self, request):
        redirect = super().process_request(request)  # PREPEND_WWW's redirect, if any
        return None if redirect is None else self._keep_method(request, redirect)

    def process_response(self, request, response):
        answer = super().process_response(request, response)
        # Only the redirect this middleware made, not one a view returned.
        return answer if answer is response else self._keep_method(request, answer)

    def _keep_method(self, request, redirect):
        if request.method in _BODYLESS:
            return redirect
        kept = HttpResponsePermanentRedirectSameMethod(redirect["Location"])
        if is_api_path(request.path_info):
            # For a client that does not follow: say what to do.
            kept.content = b'{"detail": "This URL ends with a slash: repeat the request at Location."}'
            kept["Content-Type"] = "application/json"
        kept["Content-Length"] = str(len(kept.content))
        return kept
