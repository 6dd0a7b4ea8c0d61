"""gunicorn's own refusals answered as the API answers errors: JSON, with an X-Request-ID.

gunicorn refuses some requests before the application sees them: a request
line over 4,094 bytes (414), headers over its limits (431), a malformed
request line or header (400), a transfer coding it does not take (501); and
a request its worker timeout cut short (a body that never finished
arriving) gets its 500, which is a 408 here. It
answers them with an HTML page written by ``gunicorn.util.write_error``,
with no ``X-Request-ID``. gunicorn.conf.py replaces that one function, in
the master before the workers fork, with :func:`write_error` below: the same
status and reason, a ``{"detail": "..."}`` body and a fresh request id.

The replacement mirrors gunicorn's function (its arguments, and
``util.write_nonblock`` to write); :func:`mirrors` says whether the installed
gunicorn still has that shape. When it does not, the HTML pages stay
(nothing is replaced) and ``manage.py check`` says so (productsite.W003).
Each refusal also writes a request line (``products.requests`` at INFO, method
and path ``-``, the reason) with the request id the client got: gunicorn's
own WARNING line names none.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys

from products.logfields import format_fields, request_id

logger = logging.getLogger("products.requests")

_MIRRORED_ARGUMENTS = ["sock", "status_int", "reason", "mesg"]
_replaced = None  # gunicorn's own function, once install() has replaced it


def mirrors() -> bool:
    """True when gunicorn's ``util.write_error`` is the function :func:`write_error` stands in for."""
    try:
        from gunicorn import util
    except ImportError:
        return False
    current = util.write_error
    original = _replaced if current is write_error else current
    return list(inspect.signature(original).parameters) == _MIRRORED_ARGUMENTS and callable(
        getattr(util, "write_nonblock", None)
    )


def install() -> bool:
    """Replace gunicorn's HTML error writer in this process; False (nothing replaced) when it does not mirror it."""
    global _replaced
    from gunicorn import util

    if not mirrors():
        return False
    if util.write_error is not write_error:
        _replaced, util.write_error = util.write_error, write_error
    return True


def write_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Write gunicorn's refusal as a JSON error with a new request id, then (as gunicorn does) close."""
    from gunicorn import util

    if status_int == 500 and isinstance(sys.exc_info()[1], SystemExit):
        # gunicorn aborts a worker silent for its timeout (GUNICORN_TIMEOUT)
        # with SystemExit, inside the request, and answers 500. In practice
        # that is a client sending its body too slowly (the database and
        # Redis waits end sooner, in 503s): not a bug, the request's lateness.
        status_int, reason = 408, "Request Timeout"
        mesg = "the request was not complete within the server's timeout; send it again"
    detail = f"{reason}: {mesg}" if mesg else reason
    rid = request_id(None)
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"X-Request-ID: {rid}\r\n"
        "\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)
    if logger.isEnabledFor(logging.INFO):
        fields = {"method": "-", "path": "-", "status": status_int, "request_id": rid, "reason": detail[:200]}
        logger.info(format_fields(fields), extra={"request_fields": fields})
