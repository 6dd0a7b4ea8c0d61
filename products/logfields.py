"""Log fields that cannot forge a line: escaping, key=value formatting, request ids.

Plain Python (no Django), so gunicorn's access logger (productsite/gunicorn_logging.py)
can use the same rule as the app's request log.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from contextvars import ContextVar

_BARE = re.compile(r"^[A-Za-z0-9_.:/%+\-@,;~*!()]*$")
# A request id from a client or proxy is kept when it is short and plain
# (UUIDs, hex, base64url, "trace-123"...); anything else is replaced.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:+=/-]{1,128}$")


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    if char.isprintable():
        return char
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape(text: str) -> str:
    """Return ``text`` with backslashes doubled and every non-printable character escaped.

    Non-printable is Python's ``str.isprintable``: control characters (CR, LF,
    ESC...), DEL and C1, the Unicode line and paragraph separators, format and
    unassigned characters. None of them can then break or recolour a line.
    """
    text = text.replace("\\", "\\\\")
    if text.isprintable():
        return text
    return "".join(map(_escaped, text))


def _value(value: object) -> str:
    # key=value stays parseable: anything with spaces, quotes or "=" is quoted.
    text = str(value)
    if text and _BARE.fullmatch(text):  # not match(): "$" also matches before a final "\n"
        return text
    return '"' + escape(text).replace('"', '\\"') + '"'


def format_fields(fields: dict) -> str:
    """Return ``key=value`` pairs, quoting and escaping values that need it."""
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items())


def request_id(header: str | None) -> str:
    """Return the client's X-Request-ID when it is sane, else a new random id (32 hex digits).

    A request id correlates log lines and is no secret (a client may choose
    its own): the new one comes from the random module's generator, which
    Python reseeds in every forked child, at a tenth of uuid4()'s cost (no
    system call, no UUID object) on every request that brings no id.
    """
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return f"{random.getrandbits(128):032x}"


# The id of the request this thread is serving (set by the request log's middleware).
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


class RequestIdOnEveryLine(logging.Filter):
    """Append ``request_id=...`` to a record logged while a request is served.

    A warning or a traceback (``django.request``'s 500) then names the
    request whose line reports it, as the response's ``X-Request-ID`` does;
    with several threads per worker, timing alone cannot tie them. The
    request's own line (``products.requests``) has the field already.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        rid = current_request_id.get()
        if rid is not None and record.name != "products.requests":
            try:
                message = record.getMessage()
            except Exception:
                return True  # a malformed call: the handler reports it, as without this filter
            record.msg = f"{message} {format_fields({'request_id': rid})}"
            record.args = None
        return True


class OnlyWithTraceback(logging.Filter):
    """Let a record through only when it carries an exception.

    ``django.request`` logs every 5xx response; an error the API answered on
    purpose (a 503 while the database is down) is already in the request's
    line, while an unhandled exception's traceback is news.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is not None


class SecurityEventIntoRequestLine(logging.Filter):
    """Move Django's ``django.security.*`` records into their request's log line.

    Django logs a client's suspicious request (a bad Host, too many fields or
    files, a CSRF failure) on a line of its own, at ERROR with a traceback
    for most: anyone could fill the log at will, and each request would no
    longer be one line. The record's reason goes on the request instead
    (``request.log_reason``: the request's line then says ``reason=...``) and
    the record is dropped; one without a request keeps its line, without the
    traceback.
    """

    PREFIX = "django.security."
    LONGEST = 200  # characters of the reason kept (the message quotes client input)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.PREFIX):
            return True
        request = getattr(record, "request", None)
        event = record.name[len(self.PREFIX) :]
        if request is not None:
            try:
                message = record.getMessage()
            except Exception:  # a malformed record: its name is reason enough
                message = ""
            reason = f"{event}: {message}" if message else event
            request.log_reason = reason[: self.LONGEST]
            return False
        record.exc_info = record.exc_text = None
        return True


class AtMostEvery:
    """Say when a warning is due: at most ``times`` in any ``seconds`` period of this process.

    For news that would otherwise repeat on every request (an outage met by
    each one), so a busy process cannot flood the log.
    """

    def __init__(self, seconds: float, times: int = 1) -> None:
        self.seconds, self.times = seconds, times
        self._lock = threading.Lock()
        self._started = float("-inf")  # the current period's first warning
        self._said = 0
        self._held_back = 0  # warnings refused since the last one said

    def due(self) -> bool:
        """Return True, and count it, when the current period has not had ``times`` warnings yet."""
        return self.next_warning() is not None

    def next_warning(self) -> int | None:
        """Return None when no warning is due now, else how many were held back since the last one said."""
        with self._lock:
            now = time.monotonic()
            if now - self._started >= self.seconds:
                self._started, self._said = now, 0
            if self._said >= self.times:
                self._held_back += 1
                return None
            self._said += 1
            held_back, self._held_back = self._held_back, 0
            return held_back

    def reset(self) -> None:
        """Make the next warning due at once (tests); those held back still count."""
        with self._lock:
            self._started, self._said = float("-inf"), 0
