"""JSON with exact numbers: one decoder for request bodies and import files.

A float cannot hold ``19.999999999999999`` (it becomes 20.0) or
``2147483646.9999999`` (2147483647.0), so a JSON number read as a float can
silently turn bad input into a valid-looking value. Here every number with a
fraction or an exponent is a ``Decimal`` (exactly what the client wrote), and
the product rules refuse it as they refuse the same text in a string.

Python's ``int()`` refuses strings of more than 4,300 digits with a
ValueError; an integer that long is kept as a ``Decimal`` too (the rules then
say it is out of range). Nesting deeper than Python's recursion limit, NaN,
Infinity and exponents beyond what a Decimal holds are decode errors, and so
is an object that names a key twice (``{"price": "1", "price": "-5"}``): which
one counts would be the parser's choice, not the client's, and two readers of
the same body (a proxy, a log, this service) could each take another.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

# Beyond any quantity or id; longer integers stay Decimal (no int() limit).
MAX_INT_DIGITS = 40


class JSONError(ValueError):
    """The text is not JSON this service reads; ``str()`` says why, ``pos`` where (or None)."""

    def __init__(self, message: str, pos: int | None = None) -> None:
        super().__init__(message)
        self.pos = pos


class InvalidValue(JSONError):
    """The text of the value is complete, and wrong (not cut short): reading more would not help."""


class NumberOutOfRange(InvalidValue):
    """A number no Decimal holds."""


class DuplicateKey(InvalidValue):
    """An object that names the same key twice."""


def _int(text: str) -> int | Decimal:
    return int(text) if len(text) <= MAX_INT_DIGITS else _decimal(text)


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        # An exponent beyond what Decimal holds (1e100000000000000000000).
        raise NumberOutOfRange(f"number out of range: {text[:40]}") from None


def _constant(name: str) -> None:
    raise JSONError(f"{name} is not a JSON number")


def _object(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                shown = key if len(key) <= 40 else key[:40] + "..."
                raise DuplicateKey(f"duplicate key {shown!r} in an object")
            seen.add(key)
    return obj


DECODER = json.JSONDecoder(
    parse_float=_decimal, parse_int=_int, parse_constant=_constant, object_pairs_hook=_object
)


def raw_decode(text: str, pos: int = 0) -> tuple[object, int]:
    """Decode one JSON value starting at ``pos``; return (value, end). Raise JSONError."""
    try:
        return DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise JSONError(exc.msg, exc.pos) from None
    except RecursionError:
        raise JSONError("nested too deeply", pos) from None


def loads(data: bytes | str) -> object:
    """Decode a whole JSON document (UTF-8 bytes or text). Raise JSONError."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONError(f"not valid UTF-8 at byte {exc.start}") from None
    if data.startswith("\ufeff"):
        data = data[1:]
    value, end = raw_decode(data, len(data) - len(data.lstrip(" \t\n\r")))
    if data[end:].strip(" \t\n\r"):
        raise JSONError("extra data after the JSON value", end)
    return value
