"""Request middleware: one structured log line per request (and a 503 page for a database that is down), and the body-size limit."""

from __future__ import annotations

import io
import logging
import time

from django.conf import settings
from django.db import OperationalError
from django.http import HttpResponse, JsonResponse, UnreadablePostError
from django.template.defaultfilters import filesizeformat
from django.urls import Resolver404, resolve, reverse
from django.utils.html import escape

from . import metrics
from .exceptions import (
    answers_json,
    as_every_page,
    html_page,
    is_api_path,
    log_unavailable_database,
    names_html,
)
from .logfields import current_request_id, format_fields, request_id
from .parsers import form_text_decodes

__all__ = ["BodySizeLimitMiddleware", "RequestLogMiddleware", "log_request"]

logger = logging.getLogger("products.requests")

UNMATCHED_ROUTE = "(unmatched)"
STATIC_ROUTE = "(static)"  # files WhiteNoise serves


class RequestLogMiddleware:
    """Give each request an id, log it once at INFO, and count it in the metrics.

    It also answers a database that is down or busy (``process_exception``)
    with a 503 rather than a 500.

    The id is the client's (or proxy's) ``X-Request-ID`` when it is sane (see
    logfields.request_id), else a new one; it is on ``request.request_id``,
    in the log line and in the response's ``X-Request-ID``. The log fields are
    also on the record (``record.request_fields``) for a JSON formatter. The
    level comes from LOG_LEVEL: at WARNING and above the line is skipped
    before any formatting.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        start = time.perf_counter()
        request.request_id = rid = request_id(request.headers.get("X-Request-ID"))
        serving = current_request_id.set(rid)  # other records name the request too
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(serving)
        response["X-Request-ID"] = rid
        log_request(
            request.method,
            request.path,
            response.status_code,
            start,
            response.get("X-Cache", "-"),
            request_id=rid,
            route=_route(request),
            # Why Django refused it (a bad Host, too many fields, CSRF), moved
            # here from django.security's own line (logfields.SecurityEventIntoRequestLine).
            reason=getattr(request, "log_reason", None),
        )
        return response

    def process_exception(self, request, exception):
        """Answer a database that is down or busy with a 503 page outside the API, not a 500.

        The API's views answer it themselves (products.exceptions, JSON); the
        admin's save of a row an import has locked past DATABASE_LOCK_TIMEOUT,
        or any page while the database restarts, lands here.
        """
        if not isinstance(exception, OperationalError) or is_api_path(request.path_info):
            return None
        locked = log_unavailable_database(exception)
        response = html_page(
            503,
            "Another change holds this data" if locked else "The database is busy or unavailable",
            "Nothing was changed. Try again in a few seconds.",
            title="Try again shortly",
        )
        response["Retry-After"] = "5"
        return response


def log_request(
    method: str,
    path: str,
    status: int | str,
    started: float,
    cache: str,
    *,
    request_id: str = "-",
    route: str = UNMATCHED_ROUTE,
    reason: str | None = None,
) -> None:
    """Count the request in the metrics and write its log line (also used by productsite.fastpath).

    ``route`` is the URL pattern's name, never the raw path: the metrics'
    labels stay a small, fixed set whatever clients ask for.
    """
    seconds = time.perf_counter() - started
    metrics.observe_request(route, method, status, seconds)
    if logger.isEnabledFor(logging.INFO):
        fields = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": f"{seconds * 1000:.1f}",
            "cache": cache,
            "request_id": request_id,
        }
        if reason:
            fields["reason"] = reason
        logger.info(format_fields(fields), extra={"request_fields": fields})


def _route(request) -> str:
    """Return the URL pattern's name; for a request answered before URL resolution, the one it would have had."""
    match = request.resolver_match
    if match is None:
        static = settings.STATIC_URL
        if static and request.path_info.startswith("/" + static.lstrip("/")):
            return STATIC_ROUTE  # WhiteNoise answered
        # Answered by a middleware first (a 413, a 400 for a NUL): name the
        # route all the same, so the metrics tell what was refused.
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return UNMATCHED_ROUTE
    return match.view_name or match.route


_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PLAIN_TRANSFER = frozenset({"", "chunked", "identity"})


def _transfer_coding(header: str) -> str:
    """Return the first transfer coding of ``header`` that leaves the body coded (gzip...), or ''."""
    for coding in header.split(","):
        if coding.strip().lower() not in _PLAIN_TRANSFER:
            return coding.strip()
    return ""


class BodySizeLimitMiddleware:
    """Answer 413 (JSON) for a body over DATA_UPLOAD_MAX_MEMORY_SIZE.

    Django enforces the limit only when it parses forms itself; DRF's parsers
    read the stream directly and would accept any size. The declared
    Content-Length is checked before anything reads the body (Django reads no
    more than that, so a body without one is empty).
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if request.method in _WRITES and (
            coding := _transfer_coding(request.META.get("HTTP_TRANSFER_ENCODING", ""))
        ):
            # gunicorn accepts "gzip, chunked" (and deflate, compress) but
            # decodes only the chunking: the body would be read as if plain,
            # as a Content-Encoding once was (products.parsers). Refused alike.
            return self._coded(request, coding)
        if (
            request.META.get("wsgi.input_terminated")  # the server de-chunks (gunicorn)
            and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
            and not request.META.get("CONTENT_LENGTH")
        ):
            # A chunked body has no Content-Length, and DRF reads a request
            # without one as empty: read it here (up to the limit) and give it
            # its length, so it is parsed, or refused, like any other.
            # Django bounds its stream by Content-Length (0 here): read the
            # server's input, which the server has de-chunked and terminated.
            raw = request.META["wsgi.input"]
            try:
                body = raw.read(limit + 1) if limit is not None else raw.read()
            except Exception as exc:
                # The server could not de-chunk it: a bad chunk size, a missing
                # terminator, the client gone before the last chunk (gunicorn's
                # ParseException or NoMoreData). Bad input, not a server error;
                # the server closes the connection, as it cannot tell where the
                # next request would start.
                return self._unreadable(request, exc)
            if limit is not None and len(body) > limit:
                return self._too_large(request, f"more than {limit} bytes", limit)
            request._stream = io.BytesIO(body)
            request._read_started = False
            request.META["CONTENT_LENGTH"] = str(len(body))
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            return self._too_large(request, f"{length} bytes", limit)
        if length > 0 and request.method in _WRITES:
            # A client that stops sending early (killed mid-upload) ends the
            # body with a clean end of file: the server hands on what came,
            # and the parsers would apply it ("quantity=10" of "quantity=1000").
            # Read it now (within the limit above) and refuse a short one.
            # Writes only: nothing reads a GET's body, and waiting for one
            # would hold the worker for a client that never sends it.
            try:
                received = len(request.body)
            except UnreadablePostError as exc:
                return self._unreadable(request, exc, "it could not be read")
            if received < length:
                request.log_reason = f"body ended after {received} of {length} bytes"
                return self._unreadable(
                    request,
                    None,
                    f"it ended after {received} of the {length} bytes its Content-Length announced; "
                    "nothing was changed",
                )
            if not is_api_path(request.path_info):
                # The admin's forms: Django would store U+FFFD for a byte that
                # does not decode (the API's parsers refuse it themselves).
                encoding = request.encoding or settings.DEFAULT_CHARSET
                if not form_text_decodes(request.body, request.META.get("CONTENT_TYPE", ""), encoding):
                    request.log_reason = f"form text not valid {encoding}"
                    return self._unreadable(
                        request, None, f"the form's text is not valid {encoding}; nothing was changed"
                    )
        return self.get_response(request)

    @staticmethod
    def _unreadable(request, exc: Exception | None, why: str = "") -> HttpResponse:
        why = why or "the chunked transfer encoding could not be read"
        message = f"Malformed request body: {why}."
        if exc is not None:
            request.log_reason = f"{type(exc).__name__}: {exc}"[:200]  # on the request's one line
        if answers_json(request) and not names_html(request):
            return as_every_page(request, JsonResponse({"detail": message}, status=400))
        return as_every_page(request, html_page(400, "Bad request", escape(message), back=request.path))

    @staticmethod
    def _coded(request, coding: str) -> HttpResponse:
        message = (
            f"Transfer-Encoding {coding[:40]!r} is not accepted; send the body uncompressed "
            "(chunked alone is fine). Nothing was changed."
        )
        request.log_reason = f"transfer coding {coding[:40]!r}"
        if answers_json(request) and not names_html(request):
            return as_every_page(request, JsonResponse({"detail": message}, status=415))
        return as_every_page(
            request, html_page(415, "Unsupported transfer coding", escape(message), back=request.path)
        )

    @staticmethod
    def _too_large(request, size: str, limit: int) -> HttpResponse:
        message = f"Request body is too large: {size} (limit {limit})."
        if answers_json(request) and not names_html(request):
            return as_every_page(request, JsonResponse({"detail": message}, status=413))
        # The admin's pages (an import upload) and the browsable API's forms
        # (which show an HTML answer, and reload the page for any other) get
        # HTML, as Django's own errors there, with the way back to the form.
        more = f"At most {filesizeformat(limit)} can be sent at once; nothing was changed."
        if request.path == reverse("admin:products_product_import"):
            more += " A larger file imports with manage.py import_products (docs/operations.md)."
        page = html_page(413, "Request too large", escape(message), more, back=request.path)
        return as_every_page(request, page)
