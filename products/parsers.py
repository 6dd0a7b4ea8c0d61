"""Request parsers."""

from __future__ import annotations

import io
from urllib.parse import parse_qsl

from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser

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


def _undecodable(encoding: str) -> ParseError:
    return ParseError(
        f"Form parse error - the body is not valid {encoding} text; nothing was changed. "
        "Send the text in the declared charset (UTF-8 by default)."
    )


class StrictFormParser(FormParser):
    """URL-encoded forms whose text decodes in their charset; anything else is a 400.

    DRF's parser (Django's ``QueryDict``) turns bytes that do not decode into
    U+FFFD, so a name sent with a stray byte would be stored changed.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", "utf-8")
        body = stream.read() if stream is not None else b""
        try:
            # Raw bytes first, then what the percent escapes spell.
            parse_qsl(body.decode(encoding), keep_blank_values=True, encoding=encoding, errors="strict")
        except (UnicodeDecodeError, LookupError):
            raise _undecodable(encoding) from None
        return super().parse(io.BytesIO(body), media_type, parser_context)


class StrictMultiPartParser(MultiPartParser):
    """Multipart forms whose text fields decode in their charset; anything else is a 400.

    Django's parser decodes each text field with ``errors="replace"``, after
    any ``Content-Transfer-Encoding: base64``: a byte that does not decode
    becomes U+FFFD. So a field holding U+FFFD that the body itself does not
    spell (its UTF-8 bytes ``EF BF BD``) was made by that replacement. Files
    are not decoded (the product endpoints take none). The body is at most
    DATA_UPLOAD_MAX_MEMORY_SIZE (BodySizeLimitMiddleware): reading it whole is
    bounded.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", "utf-8")
        body = stream.read() if stream is not None else b""
        parsed = super().parse(io.BytesIO(body), media_type, parser_context)
        if _REPLACEMENT_BYTES not in body and any(
            _REPLACEMENT in value for values in parsed.data.lists() for value in values[1]
        ):
            raise _undecodable(encoding)
        return parsed


_REPLACEMENT = "\ufffd"
_REPLACEMENT_BYTES = _REPLACEMENT.encode()
