"""One structured log line per request."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("products.requests")


class RequestLogMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        start = time.perf_counter()
        response = self.get_response(request)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "method=%s path=%s status=%s duration_ms=%.1f cache=%s",
                request.method,
                request.path,
                response.status_code,
                (time.perf_counter() - start) * 1000,
                response.get("X-Cache", "-"),
            )
        return response
