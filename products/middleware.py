"""Request middleware: one structured log line per request, and the body-size limit."""

from __future__ import annotations

import io
import logging
import re
import time

from django.conf import settings
from django.http import JsonResponse

logger = logging.getLogger("products.requests")

_BARE = re.compile(r"^[A-Za-z0-9_.:/%+\-@,;~*!()]*$")


def _value(value: object) -> str:
    # key=value stays parseable: anything with spaces, quotes or "=" is quoted.
    text = str(value)
    if text and _BARE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_fields(fields: dict) -> str:
    """Return ``key=value`` pairs, quoting values that need it."""
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items())


class RequestLogMiddleware:
    """Log ``method path status duration_ms cache`` once per request at INFO.

    The fields are also on the record (``record.request_fields``) for a JSON
    formatter. The level comes from LOG_LEVEL: at WARNING and above the line
    is skipped before any formatting.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        start = time.perf_counter()
        response = self.get_response(request)
        log_request(request.method, request.path, response.status_code, start, response.get("X-Cache", "-"))
        return response


def log_request(method: str, path: str, status: int | str, started: float, cache: str) -> None:
    """Write the request's log line (also used by productsite.fastpath)."""
    if logger.isEnabledFor(logging.INFO):
        fields = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": f"{(time.perf_counter() - started) * 1000:.1f}",
            "cache": cache,
        }
        logger.info(format_fields(fields), extra={"request_fields": fields})


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
            body = raw.read(limit + 1) if limit is not None else raw.read()
            if limit is not None and len(body) > limit:
                return self._too_large(f"more than {limit} bytes", limit)
            request._stream = io.BytesIO(body)
            request._read_started = False
            request.META["CONTENT_LENGTH"] = str(len(body))
        if limit is not None:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                return self._too_large(f"{length} bytes", limit)
        return self.get_response(request)

    @staticmethod
    def _too_large(size: str, limit: int) -> JsonResponse:
        return JsonResponse({"detail": f"Request body is too large: {size} (limit {limit})."}, status=413)
