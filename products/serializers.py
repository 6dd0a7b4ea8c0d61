"""API serializers. The rules themselves live in validators.py and are shared."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from decimal import Decimal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import ProhibitNullCharactersValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from . import validators
from .exceptions import ProductNameConflict
from .models import Product
from .selectors import name_taken, product_representation

_prototypes: dict[type, dict] = {}

# Context key: the caller creates and lets the name's unique constraint refuse
# a taken name, so validation skips its own check (one query fewer). Only
# productsite.fastcreate sets it; it hands a refused INSERT to the API, which
# answers the 409 with this check.
NAME_CHECKED_BY_INSERT = "name_checked_by_insert"


# How many unknown fields a 400 names one by one; the rest are counted.
MAX_NAMED_UNKNOWN = 20


class RefuseUnknownFields:
    # Serializer mixin: a write body with a field the client may not set
    # answers 400 naming it. DRF ignores unknown and read-only fields
    # silently, so a typo ("quantitiy") or a wish ("id") would look accepted.
    # (A comment, not a docstring: drf-spectacular would give a docstring to
    # every serializer inheriting it as its schema description.)

    # Sent by the browsable API's HTML forms, not part of the product.
    ignored_keys = frozenset({"csrfmiddlewaretoken"})

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            allowed = tuple(name for name, field in self.fields.items() if not field.read_only)
            unknown = [key for key in data if key not in allowed and key not in self.ignored_keys]
            if unknown:
                message = validators.unknown_field_message(allowed)
                errors = {str(key)[:100]: [message] for key in unknown[:MAX_NAMED_UNKNOWN]}
                if len(unknown) > MAX_NAMED_UNKNOWN:
                    # A body of 90,000 made-up keys must not get a 7 MB answer.
                    more = len(unknown) - MAX_NAMED_UNKNOWN
                    errors[api_settings.NON_FIELD_ERRORS_KEY] = [
                        f"{more:,} more field(s) the product does not have; the first {MAX_NAMED_UNKNOWN} are named."
                    ]
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


def _apply(rule, value):
    try:
        return rule(value)
    except DjangoValidationError as exc:
        raise serializers.ValidationError(exc.messages, code=exc.code) from None


# Numbers and numeric strings are both accepted. The schema (which differs
# by direction: a pattern-checked string out) is products.openapi.PriceFieldSchema.
class PriceField(serializers.Field):
    """A price: a JSON number or numeric string in, a two-place string out."""

    default_error_messages = {"invalid": "Price must be a number."}
    # What OPTIONS says of it (products.metadata).
    options = {
        "type": "decimal",
        "min_value": "0.00",
        "max_value": str(validators.PRICE_MAX),
        "max_digits": validators.PRICE_MAX_DIGITS,
        "decimal_places": validators.PRICE_DECIMAL_PLACES,
    }

    def to_internal_value(self, data) -> Decimal:
        return _apply(validators.clean_price, data)

    def to_representation(self, value: Decimal) -> str:
        return format(value, validators.PRICE_FORMAT)


@extend_schema_field({"type": "integer", "minimum": 0, "maximum": validators.QUANTITY_MAX, "example": 10})
class QuantityField(serializers.Field):
    """Units in stock: a non-negative integer."""

    options = {"type": "integer", "min_value": 0, "max_value": validators.QUANTITY_MAX}  # for OPTIONS

    def to_internal_value(self, data) -> int:
        return _apply(validators.clean_quantity, data)

    def to_representation(self, value: int) -> int:
        return value


class NameField(serializers.CharField):
    """A product name: a JSON string only (DRF's CharField would take 123 too).

    The name rule (validators.validate_product_name) says each thing once:
    DRF's own NUL and surrogate checks, and its blank message, would say it a
    second way ("Null characters are not allowed." beside the rule's
    "Name must not contain control characters.").
    """

    options = {"min_length": 1, "max_length": validators.NAME_MAX_LENGTH}  # for OPTIONS

    def __init__(self, **kwargs) -> None:
        messages = kwargs.setdefault("error_messages", {})
        messages.setdefault("blank", validators.BLANK_NAME_MESSAGE)
        messages.setdefault("invalid", validators.NOT_A_STRING_MESSAGE)
        super().__init__(**kwargs)
        self.validators = [
            v
            for v in self.validators
            if not isinstance(v, (ProhibitNullCharactersValidator, ProhibitSurrogateCharactersValidator))
        ]

    def to_internal_value(self, data) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        _apply(validators.check_name_length, data)  # as sent, before trimming
        return validators.trim_name(super().to_internal_value(data))


@extend_schema_field(
    {
        "type": "string",
        "minLength": 1,
        "maxLength": validators.NAME_MAX_LENGTH,
        # Something other than whitespace, no "/" and no control characters.
        "pattern": validators.NAME_SCHEMA_PATTERN,
        # What Swagger's "Try it out" fills in (else a string made from the pattern).
        "example": "Blue mug",
    }
)
class _NameSchemaField(NameField):
    pass


def name_field() -> serializers.CharField:
    # No max_length here: validate_product_name says it, once (the schema
    # still declares maxLength).
    return _NameSchemaField(
        validators=[validators.validate_product_name],
        help_text="Unique, 1..200 characters, no '/' or control characters; surrounding whitespace is trimmed.",
    )


class ProductSerializer(RefuseUnknownFields, serializers.ModelSerializer):
    """A product: its name (unique; the lookup key in URLs), price and units in stock."""

    name = name_field()
    price = PriceField()
    quantity = QuantityField(required=False, default=0, initial=0, help_text="Units in stock, >= 0.")

    class Meta:
        model = Product
        fields = ["id", "name", "price", "quantity", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate(self, attrs: dict) -> dict:
        name = attrs.get("name")
        if (
            name is not None
            and not self.context.get(NAME_CHECKED_BY_INSERT)
            and name_taken(name, None if self.instance is None else self.instance.pk)
        ):
            # A conflict with the stored state, not bad input: 409.
            raise ProductNameConflict(self)
        return attrs

    def get_fields(self) -> dict:
        # Deriving fields from the model costs more than the rest of a
        # create's validation; derive them once per class, then copy.
        prototype = _prototypes.get(type(self))
        if prototype is None:
            prototype = _prototypes[type(self)] = super().get_fields()
        return copy.deepcopy(prototype)

    def to_representation(self, instance: Product) -> dict:
        return product_representation(
            id=instance.id,
            name=instance.name,
            price=Decimal(instance.price),
            quantity=instance.quantity,
            created_at=instance.created_at,
            updated_at=instance.updated_at,
        )


class StrictIntegerField(serializers.IntegerField):
    """An integer by the rule a quantity follows (validators.integer_value): never true, "1.5" or "１"."""

    def to_internal_value(self, data):
        value = validators.integer_value(data)
        if value is None:
            self.fail("invalid")
        # Before int(): a 5,000-digit number. Compared, not abs(): arithmetic on
        # a Decimal beyond the context's exponent range (1e999999999, read
        # exactly from JSON) raises decimal.Overflow, a 500.
        if not -validators.QUANTITY_MAX <= value <= validators.QUANTITY_MAX:
            self.fail(
                "max_value" if value > 0 else "min_value", max_value=self.max_value, min_value=self.min_value
            )
        return super().to_internal_value(int(value))


class StockChangeSerializer(RefuseUnknownFields, serializers.Serializer):
    """A change to a product's stock, applied atomically; 409 if the stock would go below zero."""

    delta = StrictIntegerField(
        min_value=-validators.QUANTITY_MAX,
        max_value=validators.QUANTITY_MAX,
        help_text="Units to add (negative to remove).",
        # Worded as the quantity's rules are (validators.clean_quantity).
        error_messages={
            "invalid": "Delta must be an integer.",
            "max_value": "Delta must be at most {max_value}.",
            "min_value": "Delta must be at least {min_value}.",
        },
    )


class LegacyProductSerializer(serializers.Serializer):
    """The original Flask service's product body: name, price, quantity."""

    name = name_field()
    price = PriceField()
    quantity = QuantityField(required=False, default=0)


class LegacyProductEnvelopeSerializer(serializers.Serializer):
    """The original service's read body."""

    type = serializers.CharField(default="Product")
    count = serializers.IntegerField(default=1)
    attributes = LegacyProductSerializer()
