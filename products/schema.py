"""OpenAPI descriptions the views cannot infer: errors, headers, conditional requests.

drf-spectacular reads serializers, filters and the paginator by itself; what
it cannot see (the status codes our exception handler and middleware answer,
the ETag / X-Cache / Location headers, If-Match and If-None-Match, the legacy
routes' envelope, /health/) is declared here once and applied to the views
with ``extend_schema``/``extend_schema_view``, so views.py stays thin. How
fields, errors and auth are mapped for generated clients: products/openapi.py.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers

from . import validators
from .exceptions import InsufficientStockConflict, PreconditionFailed
from .openapi import PRICE_NUMBER, ValidationErrorSerializer
from .serializers import (
    LegacyProductEnvelopeSerializer,
    LegacyProductSerializer,
    ProductSerializer,
    StockChangeSerializer,
)

# --- Bodies ----------------------------------------------------------------------

DETAIL = inline_serializer("ErrorDetail", {"detail": serializers.CharField()})
# DRF's validation shape, one component for every 400 and name-conflict 409.
VALIDATION = ValidationErrorSerializer


def _error(description: str, body=DETAIL, example: str | None = None) -> OpenApiResponse:
    examples = [OpenApiExample("error", value={"detail": example})] if example else []
    return OpenApiResponse(body, description=description, examples=examples)


R400 = OpenApiResponse(VALIDATION, description="Bad input: malformed JSON, wrong type, a rule broken.")
R401 = _error(
    "Not authenticated, or the credentials are wrong.",
    example="Authentication credentials were not provided.",
)
R403 = _error(
    "Authenticated, but without the product permission this needs.",
    example="You do not have permission to perform this action.",
)
R404 = _error("No product has this name.", example="Not found.")
R409_NAME = OpenApiResponse(
    VALIDATION,
    description=validators.DUPLICATE_NAME_MESSAGE,
    examples=[OpenApiExample("duplicate", value={"name": [validators.DUPLICATE_NAME_MESSAGE]})],
)
R409_STOCK = _error(
    f"The quantity would become negative (or exceed {validators.QUANTITY_MAX}); nothing changed.",
    example=InsufficientStockConflict.default_detail,
)
R412 = _error(
    "If-Match no longer matches the product; nothing changed.",
    example=PreconditionFailed.default_detail,
)
R406 = _error(
    "The Accept header names no type the API answers in (JSON; HTML for the browsable API).",
    example="Could not satisfy the request Accept header.",
)
R413 = _error("The body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE.")
# gunicorn's own refusal (productsite/gunicorn_errors.py), before the app: a
# list's search and filters are free text, and a long enough query reaches it.
R414 = _error(
    "The request line (method, path and query string) is longer than 4,094 bytes; shorten the query.",
    example="URI Too Long: Request Line is too large (5035 > 4094)",
)
R415 = _error(
    "The Content-Type is not JSON, form or multipart.",
    example='Unsupported media type "text/plain" in request.',
)
R429 = _error(
    "Too many requests; retry after Retry-After seconds.",
    example="Request was throttled. Expected available in 42 seconds.",
)
R503 = _error(
    "The database is unavailable or busy (a row lock held past DATABASE_LOCK_TIMEOUT); "
    "retry after Retry-After seconds. Nothing changed.",
    example="The database is unavailable; try again shortly.",
)
R304 = OpenApiResponse(None, description="Not modified: If-None-Match matches the current ETag (no body).")

HEALTH = inline_serializer(
    "Health",
    {
        "database": serializers.ChoiceField(choices=["ok", "down"]),
        "cache": serializers.ChoiceField(choices=["ok", "down"]),
    },
)

# --- Headers -------------------------------------------------------------------------


def _header(name: str, description: str, codes: list[int], **kwargs) -> OpenApiParameter:
    return OpenApiParameter(
        name,
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description=description,
        response=codes,
        required=True,
        **kwargs,
    )


NAME = OpenApiParameter(
    "name",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description=(
        "The product's name as it is (`Blue mug`); in the URL it is percent-encoded"
        " (`/api/products/Blue%20mug/`), which generated clients and Swagger UI do themselves."
        " A name of only dots (`.`, `..`) must be sent as `%2E`: clients that resolve dot"
        " segments (browsers, httpx) would otherwise request another URL."
    ),
)
IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Only change the product if its current ETag is one of these (or `*`); else 412.",
)
IF_NONE_MATCH_WRITE = OpenApiParameter(
    "If-None-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Refuse the change with 412 if the product's current ETag is one of these (or `*`).",
)
IF_NONE_MATCH = OpenApiParameter(
    "If-None-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Answer 304 with no body if the product's current ETag is one of these (or `*`).",
)


def etag(*codes: int) -> OpenApiParameter:
    return _header(
        "ETag",
        "Strong validator of this representation; send it back in If-Match / If-None-Match.",
        list(codes),
    )


def x_cache(*codes: int) -> OpenApiParameter:
    return OpenApiParameter(
        "X-Cache",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=list(codes),
        required=True,
        enum=["HIT", "MISS"],
        description="HIT when Redis served the product, MISS when the database did.",
    )


def location(*codes: int) -> OpenApiParameter:
    return _header("Location", "URL of the new product.", list(codes))


RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    response=[429, 503],
    required=True,
    description="Seconds until the rate-limit window ends (429), or to wait before trying again (503).",
)


def _price_bound(name: str, description: str) -> OpenApiParameter:
    # django-filter says "number"; the bounds are ours (outside them: 400).
    return OpenApiParameter(
        name,
        PRICE_NUMBER,
        OpenApiParameter.QUERY,
        description=description,
    )


# django-filter's CharFilter does not export its max_length (longer: 400). No
# NUL: the service refuses one anywhere in a query string (400,
# products/request_guards.py), so a NUL is no valid search (schemathesis met it).
SEARCH = OpenApiParameter(
    "search",
    {"type": "string", "maxLength": validators.NAME_MAX_LENGTH, "pattern": "^[^\\x00]*$"},
    OpenApiParameter.QUERY,
    description="Name contains this (case-insensitive).",
)

PRICE_BOUNDS = [
    _price_bound("min_price", "Price at least this (inclusive)."),
    _price_bound("max_price", "Price at most this (inclusive)."),
]

READ_ERRORS = {401: R401, 406: R406, 429: R429, 503: R503}
WRITE_ERRORS = {400: R400, 401: R401, 403: R403, 406: R406, 413: R413, 415: R415, 429: R429, 503: R503}

# --- Request examples (what Swagger's "Try it out" starts from) ------------------

BLUE_MUG = {"name": "Blue mug", "price": "12.50", "quantity": 10}
CREATE_EXAMPLES = [OpenApiExample("Blue mug", value=BLUE_MUG, request_only=True)]
PATCH_EXAMPLES = [
    OpenApiExample("New price", value={"price": "12.50"}, request_only=True),
    OpenApiExample("Rename", value={"name": "Blue mug (large)"}, request_only=True),
]
STOCK_EXAMPLES = [
    OpenApiExample("Receive 10", value={"delta": 10}, request_only=True),
    OpenApiExample("Sell 2", value={"delta": -2}, request_only=True),
]

# --- Per-view declarations -------------------------------------------------------


def _products_operation(**kwargs):
    # One tag for the API (else drf-spectacular's path prefix, "api").
    return extend_schema(tags=["products"], **kwargs)


product_viewset_schema = extend_schema_view(
    list=_products_operation(
        summary="List products",
        description=(
            "Cursor-paginated (follow `next` / `previous`; no count), ordered by `ordering` "
            "with name breaking ties. Bad filter, ordering, page size or cursor: 400."
        ),
        responses={200: ProductSerializer(many=True), 400: R400, 414: R414, **READ_ERRORS},
        parameters=[SEARCH, *PRICE_BOUNDS, RETRY_AFTER],
    ),
    create=_products_operation(
        summary="Create a product",
        responses={201: ProductSerializer, 409: R409_NAME, **WRITE_ERRORS},
        parameters=[location(201), etag(201), RETRY_AFTER],
        examples=CREATE_EXAMPLES,
    ),
    retrieve=_products_operation(
        summary="Read a product (cached)",
        responses={200: ProductSerializer, 304: R304, 404: R404, **READ_ERRORS},
        parameters=[NAME, IF_NONE_MATCH, etag(200, 304), x_cache(200, 304), RETRY_AFTER],
    ),
    update=_products_operation(
        summary="Replace a product (renaming allowed)",
        responses={200: ProductSerializer, 404: R404, 409: R409_NAME, 412: R412, **WRITE_ERRORS},
        parameters=[NAME, IF_MATCH, IF_NONE_MATCH_WRITE, etag(200), RETRY_AFTER],
        examples=CREATE_EXAMPLES,
    ),
    partial_update=_products_operation(
        summary="Change some fields of a product",
        description="Fields left out keep their value.",
        responses={200: ProductSerializer, 404: R404, 409: R409_NAME, 412: R412, **WRITE_ERRORS},
        parameters=[NAME, IF_MATCH, IF_NONE_MATCH_WRITE, etag(200), RETRY_AFTER],
        examples=PATCH_EXAMPLES,
    ),
    destroy=_products_operation(
        summary="Delete a product",
        responses={204: None, 401: R401, 403: R403, 404: R404, 406: R406, 412: R412, 429: R429, 503: R503},
        parameters=[NAME, IF_MATCH, IF_NONE_MATCH_WRITE, RETRY_AFTER],
    ),
    stock=_products_operation(
        summary="Change the stock atomically",
        description="Add `delta` (negative to remove) to the quantity in one conditional update.",
        request=StockChangeSerializer,
        responses={200: ProductSerializer, 404: R404, 409: R409_STOCK, 412: R412, **WRITE_ERRORS},
        parameters=[NAME, IF_MATCH, IF_NONE_MATCH_WRITE, etag(200), RETRY_AFTER],
        examples=STOCK_EXAMPLES,
    ),
)

# The original Flask service's routes, kept for its clients: "legacy" (the
# components too, LegacyProduct*: generated clients name their models after them).
legacy_create_schema = extend_schema(
    operation_id="legacy_products_create",
    summary="Create a product (legacy route of the original Flask service)",
    description="Prefer `POST /api/products/`. Same rules; answers in the original service's envelope.",
    request=LegacyProductSerializer,
    responses={201: LegacyProductEnvelopeSerializer, 409: R409_NAME, **WRITE_ERRORS},
    parameters=[location(201), etag(201), RETRY_AFTER],
    examples=CREATE_EXAMPLES,
    tags=["legacy"],
)

legacy_retrieve_schema = extend_schema(
    operation_id="legacy_products_retrieve",
    summary="Read a product (legacy route of the original Flask service, cached)",
    description="Prefer `GET /api/products/{name}/`. Same cache; the original service's envelope.",
    responses={200: LegacyProductEnvelopeSerializer, 304: R304, 404: R404, **READ_ERRORS},
    parameters=[NAME, IF_NONE_MATCH, etag(200, 304), x_cache(200, 304), RETRY_AFTER],
    tags=["legacy"],
)

health_schema = extend_schema(
    summary="Database and cache reachability",
    description="200 while the database answers (the cache may be down); 503 when it does not.",
    responses={
        200: OpenApiResponse(
            HEALTH,
            description="The database answers.",
            examples=[OpenApiExample("healthy", value={"database": "ok", "cache": "ok"})],
        ),
        503: OpenApiResponse(
            HEALTH,
            description="The database does not answer.",
            examples=[OpenApiExample("database down", value={"database": "down", "cache": "ok"})],
        ),
        406: R406,
    },
    auth=[],
    tags=["health"],
)
