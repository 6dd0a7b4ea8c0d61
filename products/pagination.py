"""Keyset (cursor) pagination whose cost does not grow with the catalogue.

A page is "the next N products after (value, name)" in the requested order,
with ``name`` (unique) breaking ties. The query is a range scan on the
composite indexes ``(price, name)``, ``(quantity, name)``, ``(created_at,
name)``, ``(updated_at, name)`` (or the unique index on ``name``), so page
900,000 costs what page 1 costs: no OFFSET, no COUNT.

Why it never repeats or skips: the position is a value of the sort key, not a
row number. A product added or removed elsewhere moves no other product's
key, so the walk resumes exactly after the last product the client saw.
(A product whose sort key *changes* during the walk can be seen twice or not
at all; that is inherent to any ordering by a mutable field.)

The cursor is opaque to clients: URL-safe base64 of a small JSON document
``{"o": ordering, "d": "n"|"p", "v": value, "k": name}``, signed with
``SECRET_KEY`` (``django.core.signing``, its own salt). A cursor the server
did not issue (edited, made by hand, signed with a key no longer in
``SECRET_KEY``/``SECRET_KEY_FALLBACKS``), or made for another ordering,
answers 400; the document's shape and bounds are checked all the same.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import orjson
from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q, QuerySet
from django.template import loader
from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from .selectors import representation_page
from .validators import PRICE_FORMAT, PRICE_MAX, QUANTITY_MAX, validate_product_name

INVALID_CURSOR = "Invalid cursor."
_CURSOR_SALT = "products.pagination.cursor"


def sign_cursor(document: str) -> str:
    """Return the cursor for a base64 cursor document: ``<document>.<signature>``."""
    # "." never occurs in URL-safe base64, and needs no escaping in a query string.
    return signing.Signer(salt=_CURSOR_SALT, sep=".").sign(document)


def _unsign_cursor(cursor: str) -> str:
    """Return the document of a cursor this server signed; raise signing.BadSignature."""
    return signing.Signer(salt=_CURSOR_SALT, sep=".").unsign(cursor)


def _decode_price(value: object) -> Decimal:
    # Exactly what encode_cursor writes; anything else (1e-100000...) could
    # overflow the database's numeric type.
    if not isinstance(value, str) or not re.fullmatch(r"\d{1,10}\.\d{2}", value):
        raise ValueError
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise ValueError from None
    if not price.is_finite() or not (0 <= price <= PRICE_MAX):
        raise ValueError
    return price


def _decode_quantity(value: object) -> int:
    if type(value) is not int or not (0 <= value <= QUANTITY_MAX):
        raise ValueError
    return value


def _decode_timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError
    parsed = parse_datetime(value)
    if parsed is None or parsed.tzinfo is None:
        raise ValueError
    # In UTC, as stored; a far offset at year 1 or 9999 would overflow.
    return parsed.astimezone(UTC)


# Sort field -> (encode to JSON, decode from JSON). ``name`` has no key of its
# own: it is the tie-breaker, always in the cursor.
# A row's value may already be the API's text (rows from
# selectors.representations): price "19.99", timestamps ISO 8601.
_PAGE_SIZE = re.compile(r"[0-9]{1,6}")

_KEYS = {
    "price": (lambda v: v if isinstance(v, str) else format(v, PRICE_FORMAT), _decode_price),
    "quantity": (lambda v: v, _decode_quantity),
    "created_at": (lambda v: v if isinstance(v, str) else v.isoformat(), _decode_timestamp),
    "updated_at": (lambda v: v if isinstance(v, str) else v.isoformat(), _decode_timestamp),
}


def _get(row, field: str):
    # Model instances from the viewset, or dicts from a values() fast path.
    return row[field] if isinstance(row, dict) else getattr(row, field)


class ProductKeysetPagination(BasePagination):
    """Cursor pagination ordered by one field plus ``name`` as tie-breaker."""

    cursor_query_param = "cursor"
    page_size_query_param = "page_size"
    max_page_size = settings.PAGE_SIZE_MAX
    default_ordering = "name"
    # The browsable API shows "Previous"/"Next" links, as for DRF's cursor pages.
    template = "rest_framework/pagination/previous_and_next.html"

    # --- DRF hooks ---------------------------------------------------------

    def paginate_queryset(self, queryset: QuerySet, request, view=None) -> list:
        self.request = request
        self.base_url = request.build_absolute_uri()
        self.page_size = self.get_page_size(request)
        self.ordering = self.get_ordering(request, queryset, view)
        field, descending = self.ordering.lstrip("-"), self.ordering.startswith("-")
        self.field, self.descending = field, descending

        position = self.decode_cursor(request)
        self.position = position
        backwards = position is not None and position[0] == "p"
        # Walking backwards reads the same index in the opposite direction.
        reverse = descending != backwards
        order = tuple("-" + f if reverse else f for f in self._sort_fields())
        after = None
        if position is not None:
            _, value, name = position
            after = (self._after_reverse if reverse else self._after_forward, value, name)
        rows = representation_page(queryset, order, self.page_size + 1, after)
        has_more = len(rows) > self.page_size
        rows = rows[: self.page_size]
        if backwards:
            rows.reverse()
            self.has_previous, self.has_next = has_more, True
        else:
            self.has_previous, self.has_next = position is not None, has_more
        self.page = rows
        self.display_page_controls = self.has_previous or self.has_next
        return rows

    def get_paginated_response(self, data) -> Response:
        return Response(self.get_paginated_data(data))

    def get_paginated_data(self, data) -> dict:
        """Return the page's body: its links and ``data`` as its results."""
        return {"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data}

    def get_paginated_response_schema(self, schema: dict) -> dict:
        link = {"type": "string", "format": "uri", "nullable": True}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": {**link, "description": "The next page, or null on the last page."},
                "previous": {**link, "description": "The previous page, or null on the first page."},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "Opaque position from a `next` or `previous` link; 400 when invalid.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Products per page (1..{self.max_page_size}; default {settings.REST_FRAMEWORK.get('PAGE_SIZE', 50)}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
            },
        ]

    # --- Parameters ----------------------------------------------------------

    def get_page_size(self, request) -> int:
        default = settings.REST_FRAMEWORK.get("PAGE_SIZE") or 50
        raw = request.query_params.get(self.page_size_query_param)
        if not raw:
            return min(default, self.max_page_size)
        # ASCII digits only, as every other number parameter: int() also takes
        # "５", "5_0" and " 5 ".
        size = int(raw) if _PAGE_SIZE.fullmatch(raw) else 0
        if not (1 <= size <= self.max_page_size):
            raise ValidationError(
                {self.page_size_query_param: [f"Enter a whole number from 1 to {self.max_page_size}."]}
            )
        return size

    def get_ordering(self, request, queryset, view) -> str:
        """Return the validated ordering term, e.g. "-price" (the view's filter checks it)."""
        for backend in getattr(view, "filter_backends", []):
            if hasattr(backend, "get_ordering_term"):
                return backend().get_ordering_term(request, queryset, view)
        return self.default_ordering

    def _sort_fields(self) -> list[str]:
        return ["name"] if self.field == "name" else [self.field, "name"]

    # The page read keeps a compiled query per shape and filter (selectors.
    # representation_page): one method per direction, each a function of the
    # position alone once the ordering is known.
    def _after_forward(self, value, name: str) -> Q:
        return self._after(value, name, reverse=False)

    def _after_reverse(self, value, name: str) -> Q:
        return self._after(value, name, reverse=True)

    def _after(self, value, name: str, reverse: bool) -> Q:
        """Select rows strictly after (value, name) in the scan direction."""
        op = "lt" if reverse else "gt"
        if self.field == "name":
            return Q(**{f"name__{op}": name})
        # "field >= v AND (field > v OR name > n)": the first term gives the
        # index a range start, so the scan never walks the skipped rows.
        bound = "lte" if reverse else "gte"
        return Q(**{f"{self.field}__{bound}": value}) & (
            Q(**{f"{self.field}__{op}": value}) | Q(**{f"name__{op}": name})
        )

    # --- Cursors -------------------------------------------------------------

    def decode_cursor(self, request) -> tuple[str, object, str] | None:
        """Return (direction, value, name) from the request's cursor, or None."""
        raw = request.query_params.get(self.cursor_query_param)
        if not raw:
            # "?cursor=" is the first page, as a form with an empty field would send it.
            return None
        try:
            document = _unsign_cursor(raw)
            padded = document + "=" * (-len(document) % 4)
            doc = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
            if not isinstance(doc, dict) or doc.get("o") != self.ordering:
                raise ValueError
            direction, name = doc.get("d"), doc.get("k")
            if direction not in ("n", "p") or not isinstance(name, str):
                raise ValueError
            # A name the rules allow (no NUL, which PostgreSQL cannot compare).
            validate_product_name(name)
            value = None if self.field == "name" else _KEYS[self.field][1](doc.get("v"))
        except (
            ValueError,
            OverflowError,
            UnicodeError,
            binascii.Error,
            orjson.JSONDecodeError,
            DjangoValidationError,
            signing.BadSignature,
        ):
            raise ValidationError({self.cursor_query_param: [INVALID_CURSOR]}) from None
        return direction, value, name

    def encode_cursor(self, direction: str, value, name: str) -> str:
        doc = {"o": self.ordering, "d": direction, "k": name}
        if self.field != "name":
            doc["v"] = _KEYS[self.field][0](value)
        return sign_cursor(base64.urlsafe_b64encode(orjson.dumps(doc)).decode("ascii").rstrip("="))

    def _cursor_at(self, row, direction: str) -> str:
        value = None if self.field == "name" else _get(row, self.field)
        return self.encode_cursor(direction, value, _get(row, "name"))

    def _link(self, cursor: str) -> str:
        return replace_query_param(self.base_url, self.cursor_query_param, cursor)

    def get_html_context(self) -> dict:
        return {"previous_url": self.get_previous_link(), "next_url": self.get_next_link()}

    def to_html(self) -> str:
        return loader.get_template(self.template).render(self.get_html_context())

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        if not self.page:
            # Walked back past the start (everything before was deleted):
            # the first page is the next one.
            return remove_query_param(self.base_url, self.cursor_query_param)
        return self._link(self._cursor_at(self.page[-1], "n"))

    def get_previous_link(self) -> str | None:
        if not self.has_previous:
            return None
        if not self.page:
            # Walked forward past the end: go back from where the walk was.
            _, value, name = self.position
            return self._link(self.encode_cursor("p", value, name))
        return self._link(self._cursor_at(self.page[0], "p"))
