"""Request middleware: one structured log line per request, and the body-size limit."""

from __future__ import annotations

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
        if logger.isEnabledFor(logging.INFO):
            fields = {
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": f"{(time.perf_counter() - start) * 1000:.1f}",
                "cache": response.get("X-Cache", "-"),
            }
            logger.info(format_fields(fields), extra={"request_fields": fields})
        return response


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
        if limit is not None:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                return JsonResponse(
                    {"detail": f"Request body is too large: {length} bytes (limit {limit})."},
                    status=413,
                )
        return self.get_response(request)
