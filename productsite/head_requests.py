"""HEAD answers with the GET's headers and no body, as RFC 9110 asks."""

from __future__ import annotations

from collections.abc import Callable, Iterable


class OmitHeadBodies:
    """WSGI middleware: send no body bytes for a HEAD request.

    Django renders the full body for HEAD and leaves dropping it to the
    server; gunicorn then drops it but logs a WARNING per response, a second
    log line for every load-balancer or monitoring probe. The headers
    (Content-Length included) stay those of the GET.
    """

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        result = self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "HEAD":
            return result
        close = getattr(result, "close", None)
        if close is not None:
            close()  # the response's close() ends the request (signals, DB connection)
        return []
