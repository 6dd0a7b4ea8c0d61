"""Request parsers."""

from __future__ import annotations

import base64
import binascii
import io
from urllib.parse import parse_qsl

from django.http.multipartparser import FIELD, ChunkIter, LazyStream, MultiPartParserError, Parser, exhaust
from django.utils.http import parse_header_parameters
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser

from . import jsonnumbers


def _refuse_content_coding(media_type: str | None, parser_context: dict | None) -> None:
    """Raise 415 for a body sent with a content coding (``Content-Encoding: gzip``): none is decoded here.

    Read as it came, a compressed body would be refused as bad JSON at best,
    and a plain one labelled ``gzip`` would be taken for what it is not
    (RFC 9110, section 15.5.16: 415 for a content coding the server does not take).
    """
    request = (parser_context or {}).get("request")
    coding = request.META.get("HTTP_CONTENT_ENCODING", "") if request is not None else ""
    if coding.strip().lower() not in ("", "identity"):
        raise UnsupportedMediaType(
            media_type or "",
            detail=f"Content-Encoding {coding.strip()[:40]!r} is not accepted; send the body uncompressed.",
        )


class ExactJSONParser(JSONParser):
    """JSON bodies with numbers read as the exact decimals the client wrote.

    See products.jsonnumbers: no float rounding, no 500 for a 4,301-digit
    integer or a deeply nested body, NaN and Infinity refused (as DRF does).
    """

    def parse(self, stream, media_type=None, parser_context=None):
        _refuse_content_coding(media_type, parser_context)
        try:
            return jsonnumbers.loads(stream.read() if stream is not None else b"")
        except jsonnumbers.JSONError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


def _undecodable(encoding: str) -> ParseError:
    return ParseError(
        f"Form parse error - the body is not valid {encoding} text; nothing was changed. "
        "Send the text in the declared charset (UTF-8 by default)."
    )


def _refuse_repeated_fields(data) -> None:
    """Raise 400 for a form field sent twice (``name=a&name=b``): which one counts would be the parser's choice.

    As a JSON body with a key twice is refused (products.jsonnumbers).
    """
    for key, values in data.lists():
        if len(values) > 1:
            raise ParseError(
                f"Form parse error - the field {key[:100]!r} is sent {len(values)} times; "
                "nothing was changed. Send each field once."
            )


class StrictFormParser(FormParser):
    """URL-encoded forms whose text decodes in their charset; anything else is a 400.

    DRF's parser (Django's ``QueryDict``) turns bytes that do not decode into
    U+FFFD, so a name sent with a stray byte would be stored changed.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        _refuse_content_coding(media_type, parser_context)
        encoding = (parser_context or {}).get("encoding", "utf-8")
        body = stream.read() if stream is not None else b""
        if not _form_decodes(body, encoding):
            raise _undecodable(encoding)
        parsed = super().parse(io.BytesIO(body), media_type, parser_context)
        _refuse_repeated_fields(parsed)
        return parsed


class StrictMultiPartParser(MultiPartParser):
    """Multipart forms whose text fields decode in their charset; anything else is a 400.

    Django's parser decodes each text field with ``errors="replace"`` (after
    a ``Content-Transfer-Encoding: base64``, its only transfer encoding): a
    byte that does not decode becomes U+FFFD. Each field is split out again
    with Django's own multipart reader and decoded strictly, as Django would
    decode it. Files are not decoded (the product endpoints take none). The
    body is at most DATA_UPLOAD_MAX_MEMORY_SIZE (BodySizeLimitMiddleware):
    reading it whole is bounded.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        _refuse_content_coding(media_type, parser_context)
        encoding = (parser_context or {}).get("encoding", "utf-8")
        body = stream.read() if stream is not None else b""
        parsed = super().parse(io.BytesIO(body), media_type, parser_context)  # Django's checks first
        if not _fields_decode(body, media_type or "", encoding):
            raise _undecodable(encoding)
        _refuse_repeated_fields(parsed.data)
        return parsed


def form_text_decodes(body: bytes, content_type: str, encoding: str) -> bool:
    """Return True when a form's text (URL-encoded, or a multipart's text fields) decodes strictly in ``encoding``.

    For what Django parses outside DRF (the admin's forms): products.middleware
    refuses such a body before Django stores U+FFFD in its place.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        return _form_decodes(body, encoding)
    if media == "multipart/form-data":
        return _fields_decode(body, content_type, encoding)
    return True


def _form_decodes(body: bytes, encoding: str) -> bool:
    try:
        # Raw bytes first, then what the percent escapes spell.
        parse_qsl(body.decode(encoding), keep_blank_values=True, encoding=encoding, errors="strict")
    except (UnicodeError, LookupError):  # UnicodeError: a codec such as punycode
        return False
    return True


def _fields_decode(body: bytes, content_type: str, encoding: str) -> bool:
    """Return True when every text field of a multipart ``body`` decodes strictly in ``encoding``."""
    boundary = parse_header_parameters(content_type)[1].get("boundary", "")
    if not boundary or not boundary.isascii():
        return True  # Django refuses the body itself, with its own message
    try:
        parts = Parser(LazyStream(ChunkIter(io.BytesIO(body), 64 * 1024)), boundary.encode("ascii"))
        for item_type, meta_data, field_stream in parts:
            disposition = meta_data.get("content-disposition")
            if item_type != FIELD or not (disposition and disposition[1].get("name")):
                exhaust(field_stream)  # files, and parts without a name (Django skips them)
                continue
            data = field_stream.read()
            transfer_encoding = meta_data.get("content-transfer-encoding")
            if transfer_encoding is not None and transfer_encoding[0].strip() == "base64":
                try:
                    data = base64.b64decode(data)
                except binascii.Error:
                    pass  # Django keeps the text as sent
            data.decode(encoding)
    except (UnicodeError, LookupError):
        return False
    except (MultiPartParserError, ValueError):
        return True  # malformed: Django's own parser says so
    return True
