"""How the OpenAPI schema is generated: the AutoSchema, extensions and hooks.

The schema is what clients are generated from (docs/api-clients.md), so it
says what the server really does: no default on a PATCH field (a generated
client would send it), every response field required, prices out as
pattern-checked strings, one validation-error model, the token scheme
spelled out, a name for every ordering. products/schema.py applies these to
the views; settings.SPECTACULAR_SETTINGS names the class and the hooks.
"""

from __future__ import annotations

from drf_spectacular.authentication import TokenScheme
from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import permissions, serializers

from . import validators


class ProductAutoSchema(AutoSchema):
    """AutoSchema that knows reads need no credentials under our permission class."""

    def get_auth(self) -> list[dict]:
        auths = super().get_auth()
        anon_reads = any(
            isinstance(p, permissions.DjangoModelPermissionsOrAnonReadOnly)
            for p in self.view.get_permissions()
        )
        if anon_reads and self.method in permissions.SAFE_METHODS and {} not in auths:
            # "{}": credentials are optional (sent, they must be valid: else 401).
            auths.append({})
        return auths

    def _get_serializer_field_meta(self, field, direction):
        meta = super()._get_serializer_field_meta(field, direction)
        if direction == "response" or getattr(field.root, "partial", False):
            # A PATCH leaves out what it does not change; a default here makes
            # generated clients send it (quantity: 0 on a price-only PATCH).
            # In a response every field is sent, so a default means nothing.
            meta.pop("default", None)
        return meta

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "response" and schema.get("properties"):
            # Every field of every body we send is present (null where it may
            # be); optional fields would be "Unset" in generated clients.
            schema["required"] = list(schema["properties"])
        return schema


class TokenAuthScheme(TokenScheme):
    """DRF's token scheme, described so a client (or its generator) can use it."""

    priority = 1  # over drf-spectacular's own extension for the same class

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                "The header's value is the word `Token`, a space, then the key: "
                "`Authorization: Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b` "
                "(not `Bearer`). openapi-python-client: "
                '`AuthenticatedClient(base_url, token=KEY, prefix="Token")`.'
            ),
        }


# --- Prices -----------------------------------------------------------------------

_WHOLE = validators.PRICE_WHOLE_DIGITS
_PLACES = validators.PRICE_DECIMAL_PLACES
PRICE_OUT = {
    "type": "string",
    "pattern": rf"^[0-9]{{1,{_WHOLE}}}\.[0-9]{{{_PLACES}}}$",
    "example": "12.50",
}
# In: a string, or a number. No multipleOf on the number: validators compute
# 19.99 / 0.01 in floating point and reject valid prices; "at most 2 decimal
# places" stays in the description (and the server answers 400).
PRICE_NUMBER = {"type": "number", "minimum": 0, "maximum": float(validators.PRICE_MAX)}
PRICE_IN = {
    "oneOf": [
        {"type": "string", "pattern": rf"^[0-9]{{1,{_WHOLE}}}(\.[0-9]{{1,{_PLACES}}})?$"},
        PRICE_NUMBER,
    ],
    "example": "12.50",
}


class PriceFieldSchema(OpenApiSerializerFieldExtension):
    """A price: a two-place decimal string out; a string or a number in."""

    target_class = "products.serializers.PriceField"

    def map_serializer_field(self, auto_schema, direction):
        if direction == "response":
            return {**PRICE_OUT, "description": f"Decimal with exactly {_PLACES} places, as a string."}
        return {
            **PRICE_IN,
            "description": f"Decimal >= 0 with at most {_PLACES} places and {_WHOLE} digits before the point; "
            'a string ("12.50", exact) or a JSON number.',
        }


# --- Errors ----------------------------------------------------------------------


class ValidationErrorSerializer(serializers.Serializer):
    """DRF's validation shape; its schema is ValidationErrorSchema."""


class ValidationErrorSchema(OpenApiSerializerExtension):
    """One component for every 400 and name-conflict 409: ``{"field": ["message"]}``."""

    target_class = ValidationErrorSerializer

    def get_name(self, auto_schema, direction):
        return "ValidationError"

    def map_serializer(self, auto_schema, direction):
        return {
            "type": "object",
            "description": 'Errors by field: `{"field": ["message", ...]}`; `{"detail": "..."}` '
            "for a body that does not parse or a conflict with no single field.",
            "additionalProperties": {
                "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]
            },
            "example": {"price": ["Price must be greater than or equal to 0."]},
        }


# --- Postprocessing hooks -------------------------------------------------------

# Query parameters of the list that an empty value leaves unset (``?in_stock=``),
# as the browsable API's filter form sends them.
EMPTY_MEANS_UNSET = {"search", "min_price", "max_price", "in_stock", "ordering", "cursor", "page_size"}


def mark_empty_query_values(result: dict, generator, request, public) -> dict:
    """Say ``allowEmptyValue`` on the list's optional query parameters (a postprocessing hook)."""
    for item in result.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("in") == "query" and parameter.get("name") in EMPTY_MEANS_UNSET:
                    parameter["allowEmptyValue"] = True
    return result


def name_descending_orderings(result: dict, generator, request, public) -> dict:
    """Give ``-field`` enum values names (``x-enum-varnames``), a postprocessing hook.

    Generators name enum members after their values; "-name" is not an
    identifier, so they fall back to VALUE_5 ... VALUE_9.
    """

    def visit(node):
        if isinstance(node, dict):
            values = node.get("enum")
            if isinstance(values, list) and any(isinstance(v, str) and v.startswith("-") for v in values):
                node["x-enum-varnames"] = [
                    f"{v[1:]}_desc" if v.startswith("-") else str(v) for v in values if isinstance(v, str)
                ]
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(result)
    return result


def forbid_unknown_request_fields(result: dict, generator, request, public) -> dict:
    """Say ``additionalProperties: false`` on request bodies (a postprocessing hook).

    The write serializers refuse fields they do not have (serializers.RefuseUnknownFields).
    """
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object":
            component["additionalProperties"] = False
    return result


REQUEST_ID_DESCRIPTION = (
    "Identifies the request in the service's log line. The client's own, when it sends"
    " one of 1 to 128 letters, digits and `._:+=/-`; otherwise one the service made."
)


def request_id_headers(result: dict, generator, request, public) -> dict:
    """Describe ``X-Request-ID`` on every operation and every response (a postprocessing hook).

    products.middleware.RequestLogMiddleware sets it on every response, and
    keeps the client's own when it is sane (logfields.request_id).
    """
    header = {"schema": {"type": "string"}, "description": REQUEST_ID_DESCRIPTION}
    for item in result.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            parameters = operation.setdefault("parameters", [])
            if not any(p.get("in") == "header" and p.get("name") == "X-Request-ID" for p in parameters):
                parameters.append({"in": "header", "name": "X-Request-ID", **header})
            for response in operation["responses"].values():
                response.setdefault("headers", {}).setdefault("X-Request-ID", {**header, "required": True})
    return result
