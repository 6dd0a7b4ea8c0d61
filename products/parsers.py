"""Request parsers."""

from __future__ import annotations

import orjson
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class OrjsonParser(JSONParser):
    """JSON bodies through orjson.

    Besides speed: the standard library's parser raises RecursionError on a
    deeply nested body (a 500), where orjson stops at a fixed depth with a
    decode error (a 400). It also refuses NaN and Infinity, as DRF does.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return orjson.loads(stream.read() if stream is not None else b"")
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
