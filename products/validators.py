"""The product rules, in one place.

The model fields, the API serializer, the admin form and the bulk importer all
call these functions, so a rule changes here or nowhere. They are plain
functions over plain values (no serializer per row), cheap enough for an
import of millions of rows.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError

NAME_MAX_LENGTH = 200
# C0 and C1 control characters and DEL: never in a name.
_CONTROL = r"\x00-\x1f\x7f-\x9f"
# A name as one URL path segment (the URLconf, the views' lookup, the fast
# path): no "/", no control characters.
NAME_URL_PATTERN = rf"[^/{_CONTROL}]+"
# The same for the OpenAPI schema, which also says "not only whitespace".
NAME_SCHEMA_PATTERN = rf"^[^/{_CONTROL}]*[^/\s{_CONTROL}][^/{_CONTROL}]*$"


def keep_dot_segments(path: str) -> str:
    """Return a URL path with each segment that is only ``.`` or ``..`` written as ``%2E`` / ``%2E%2E``.

    Products may be named so; as bare path segments, clients (and
    build_absolute_uri) would resolve them away to another resource.
    """
    return "/".join("%2E" * len(s) if s in (".", "..") else s for s in path.split("/"))


PRICE_MAX_DIGITS = 12
PRICE_DECIMAL_PLACES = 2
PRICE_WHOLE_DIGITS = PRICE_MAX_DIGITS - PRICE_DECIMAL_PLACES
PRICE_MAX = Decimal(10) ** PRICE_WHOLE_DIGITS - Decimal(1).scaleb(-PRICE_DECIMAL_PLACES)  # 9999999999.99
# The largest value every supported database stores in an integer column.
QUANTITY_MAX = 2_147_483_647
PRICE_STEP = Decimal(1).scaleb(-PRICE_DECIMAL_PLACES)  # the smallest price step, 0.01
# A price as the API, the exports and the cursors write it: format(price, PRICE_FORMAT) -> "12.50".
PRICE_FORMAT = f".{PRICE_DECIMAL_PLACES}f"
INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only, unlike int()
# The number syntax prices are written in (bodies, files and the list's price filters).
PLAIN_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")

DUPLICATE_NAME_MESSAGE = "A product with this name already exists."

# The fields a client sets; everything else in a write body is refused.
WRITABLE_FIELDS = ("name", "price", "quantity")

_CONTROL_CHARS = re.compile(f"[{_CONTROL}]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_name_length(value: str) -> None:
    """Reject a name longer than NAME_MAX_LENGTH, counted as sent (before trimming, as the schema says)."""
    if len(value) > NAME_MAX_LENGTH:
        raise ValidationError(
            f"Name must be at most {NAME_MAX_LENGTH} characters (it has {len(value)}).",
            code="max_length",
        )


BLANK_NAME_MESSAGE = "Name must not be blank."

# Surrounding whitespace: Python's (str.isspace) and U+FEFF, which the
# schema's pattern counts as whitespace too (ECMA-262's \s, what JavaScript
# clients validate with) and str.strip() does not.
_SURROUNDING_SPACE = re.compile(r"^[\s\ufeff]+|[\s\ufeff]+$")


def trim_name(value: str) -> str:
    """Return ``value`` without its surrounding whitespace (U+FEFF included)."""
    return _SURROUNDING_SPACE.sub("", value)


def validate_product_name(value: str) -> None:
    """Reject names that cannot be a URL path segment or a printable label."""
    if value != trim_name(value):
        raise ValidationError("Name must not start or end with whitespace.", code="whitespace")
    if not value:
        raise ValidationError(BLANK_NAME_MESSAGE, code="blank")
    check_name_length(value)
    if "/" in value:
        raise ValidationError('Name must not contain "/".', code="slash")
    if _CONTROL_CHARS.search(value):
        raise ValidationError("Name must not contain control characters.", code="control_character")
    surrogate = _SURROGATE.search(value)
    if surrogate:
        # A lone surrogate (JSON's "\ud800") cannot be stored as UTF-8; DRF's
        # own message, so the API and the import say it alike.
        raise ValidationError(
            f"Surrogate characters are not allowed: U+{ord(surrogate.group()):X}.",
            code="surrogate_characters",
        )


def clean_name(value: object) -> str:
    """Return the trimmed name, or raise ValidationError (in the API's words for a null or a non-string)."""
    if value is None:
        raise ValidationError(NULL_MESSAGE, code="null")
    if not isinstance(value, str):
        raise ValidationError(NOT_A_STRING_MESSAGE, code="invalid")
    check_name_length(value)
    name = trim_name(value)
    validate_product_name(name)
    return name


# What DRF says of a JSON null for a field that takes none, and of a field left
# out that must be given: the import says the same (one rule, one message).
NULL_MESSAGE = "This field may not be null."
REQUIRED_MESSAGE = "This field is required."
NOT_A_STRING_MESSAGE = "Not a valid string."  # DRF's CharField, for a name that is not a JSON string


def clean_price(value: object) -> Decimal:
    """Return the price as a Decimal with two places, or raise ValidationError.

    Accepts a number or a numeric string; floats go through their shortest
    repr so 19.99 stays 19.99.
    """
    if value is None:  # JSON null in an import: DRF's words for it in the API
        raise ValidationError(NULL_MESSAGE, code="null")
    if isinstance(value, bool):
        raise ValidationError("Price must be a number.", code="invalid")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValidationError("Price must be a finite number.", code="invalid")
        value = repr(value)
    if isinstance(value, str):
        value = value.strip()
        # Plain ASCII numbers only: Decimal() would also take "1_000" and
        # other scripts' digits.
        if not PLAIN_NUMBER.fullmatch(value):
            try:
                infinite = not Decimal(value).is_finite()
            except InvalidOperation:
                infinite = False
            message = "Price must be a finite number." if infinite else "Price must be a number."
            raise ValidationError(message, code="invalid")
    try:
        price = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValidationError("Price must be a number.", code="invalid") from None
    if not price.is_finite():
        raise ValidationError("Price must be a finite number.", code="invalid")
    if price < 0:
        raise ValidationError("Price must be greater than or equal to 0.", code="min_value")
    # Whole digits by the part before the point: 9999999999.995 has ten,
    # and is refused for its decimals below, not as too large.
    if price >= Decimal(10) ** PRICE_WHOLE_DIGITS:
        raise ValidationError(
            f"Price must have at most {PRICE_WHOLE_DIGITS} digits before the decimal point.",
            code="max_whole_digits",
        )
    if price != price.quantize(PRICE_STEP):
        raise ValidationError(
            f"Price must have at most {PRICE_DECIMAL_PLACES} decimal places.", code="max_decimal_places"
        )
    # "-0" is zero: store and show it as 0.00, never -0.00.
    return abs(price).quantize(PRICE_STEP) if price == 0 else price.quantize(PRICE_STEP)


def integer_value(value: object) -> int | Decimal | None:
    """Return ``value`` as a whole number (int, or an integral Decimal), or None when it is not one.

    The rule for every integer a client sends (a quantity, a stock delta): a
    JSON integer, a JSON number with an integral value (``5.0``, ``1e1``, read
    exactly), or a string of ASCII digits with an optional sign; never
    ``true``, ``"1.5"`` or other digits than ASCII's.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        # Decimal, not int(): int() refuses more than 4,300 digits (a 500).
        return Decimal(value) if INTEGER.fullmatch(value) else None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return value  # a JSON number such as 5 or 5.0, read exactly
    return None


def clean_quantity(value: object) -> int:
    """Return the quantity as an int, or raise ValidationError."""
    if value is None:
        raise ValidationError(NULL_MESSAGE, code="null")
    quantity = integer_value(value)
    if quantity is None:
        raise ValidationError("Quantity must be an integer.", code="invalid")
    if quantity < 0:
        raise ValidationError("Quantity must be greater than or equal to 0.", code="min_value")
    if quantity > QUANTITY_MAX:
        raise ValidationError(f"Quantity must be at most {QUANTITY_MAX}.", code="max_value")
    return int(quantity)


def validate_price(value: Decimal) -> None:
    """Raise ValidationError for a price clean_price refuses (the model field's validator)."""
    clean_price(value)


def validate_quantity(value: int) -> None:
    """Raise ValidationError for a quantity clean_quantity refuses (the model field's validator)."""
    clean_quantity(value)


def unknown_field_message(allowed: tuple[str, ...] = WRITABLE_FIELDS) -> str:
    """Return the message for a field a client may not set (unknown or read-only).

    The API, the import (columns and JSON keys) and any other entry give this
    one message, keyed by the offending field.
    """
    return f"Not a field you can set (the fields are: {', '.join(allowed)})."


def fold_case(text: str) -> str:
    """Return ``text`` case-folded letter by letter, the way name search compares names.

    Unicode's simple case folding, as SQLite's trigram index and PostgreSQL's
    UPPER() fold: a letter becomes one letter. str.casefold() alone is full
    folding ("ß" -> "ss", "ﬁ" -> "fi"), so a search for "ß" found "Classic"
    in a scan but not through the index; such letters keep one-letter forms.
    """
    folded = text.casefold()
    if len(folded) == len(text):  # no letter grew: full and simple folding agree
        return folded
    return "".join(_fold_letter(letter) for letter in text)


CASEFOLD_SQL_FUNCTION = "PRODUCT_CASEFOLD"  # fold_case in SQLite's SQL (filters.CaseFold calls it)


def add_casefold_function(sqlite_connection) -> None:
    """Give a raw sqlite3 connection :data:`CASEFOLD_SQL_FUNCTION` (every connection the searches may run on)."""
    sqlite_connection.create_function(
        CASEFOLD_SQL_FUNCTION, 1, lambda text: None if text is None else fold_case(text), deterministic=True
    )


def _fold_letter(letter: str) -> str:
    folded = letter.casefold()
    if len(folded) == 1:
        return folded
    lower = letter.lower()  # "ẞ" -> "ß"; a letter with no one-letter fold stays itself ("ß", "ﬁ")
    return lower if len(lower) == 1 else letter
