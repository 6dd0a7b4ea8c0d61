"""Request parsers."""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from . import jsonnumbers


class ExactJSONParser(JSONParser):
    """JSON bodies with numbers read as the exact decimals the client wrote.

    See products.jsonnumbers: no float rounding, no 500 for a 4,301-digit
    integer or a deeply nested body, NaN and Infinity refused (as DRF does).
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return jsonnumbers.loads(stream.read() if stream is not None else b"")
        except jsonnumbers.JSONError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
