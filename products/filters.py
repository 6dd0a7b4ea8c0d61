"""List filters and ordering; bad values answer 400 with a field message.

Every filter is answered through an index, whatever the ordering. A page is
"the first 50 matches in the requested order": scanning the ordering's index
and skipping non-matches is fast when matches are common, and slow when they
are rare (the whole index may be read to find none). So before the page query
each active filter asks its own index for up to NARROW_LIMIT + 1 matching ids
(``price`` through ``(price, name)``, ``in_stock=true`` through
``(quantity, name)``, ``search`` through the trigram index, see migration
0003). ``in_stock=false`` is ``quantity = 0``: the ``(quantity, <ordering>,
name)`` indexes answer it in any order directly. A filter with at most NARROW_LIMIT matches narrows the page query to
those ids (a sort of at most that many rows); when every filter matches more,
matches are common enough that the ordering's index finds a page quickly.

django-filter's DRF backend raises ValidationError for an invalid filter
form. Two gaps are closed here: its BooleanFilter turns ``in_stock=maybe``
into "no filter" silently, and DRF's OrderingFilter drops unknown fields
silently. Both answer 400 instead, so a typo never looks like a valid answer.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR

import django_filters
from django import forms
from django.db import connections
from django.db.models import CharField, Func, QuerySet
from django_filters.constants import EMPTY_VALUES
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.utils.urls import remove_query_param

from .models import Product
from .validators import CASEFOLD_SQL_FUNCTION, NAME_MAX_LENGTH, PLAIN_NUMBER, PRICE_MAX, PRICE_STEP, fold_case

ORDERING_FIELDS = ("name", "price", "quantity", "created_at", "updated_at")

# Above this many matches a filter is "common": the page query scans the
# ordering's index instead of sorting the matches. The two costs meet near
# sqrt(page size x catalogue size); 2,000 keeps both small at a million rows.
NARROW_LIMIT = 2000
# Trigram indexes cannot serve a shorter term.
TRIGRAM = 3


class _PlainDecimalField(forms.DecimalField):
    """Django's DecimalField, taking only the plain ASCII numbers a price in a body may be.

    Decimal() also reads "1_000" and other scripts' digits ("１０００"); the
    product rules refuse those, so a filter should not find by them.
    """

    def to_python(self, value):
        if isinstance(value, str) and value.strip() and not PLAIN_NUMBER.fullmatch(value.strip()):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)


class PriceFilter(django_filters.NumberFilter):
    """A price bound: any decimal from 0 to the largest price, inclusive.

    Stored prices have two places, so the bound is rounded inwards to whole
    cents (``min_price=1.001`` means ``price >= 1.01``): same answer, and no
    database ever compares against a number it cannot hold (PostgreSQL's
    numeric overflows on ``1e-100000``).
    """

    field_class = _PlainDecimalField

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", PRICE_MAX)
        super().__init__(*args, **kwargs)

    def get_max_validator(self):
        # max_value (the price limit) already bounds it; NumberFilter's own
        # 1e50 cap would add a second, confusing message for the same value.
        return None

    def filter(self, qs, value):
        if value in EMPTY_VALUES:
            return qs
        rounding = ROUND_CEILING if self.lookup_expr == "gte" else ROUND_FLOOR
        return super().filter(qs, value.quantize(PRICE_STEP, rounding=rounding))


class CaseFold(Func):
    """Unicode case folding on SQLite (validators.fold_case, registered on each connection by receivers.py)."""

    function = CASEFOLD_SQL_FUNCTION
    output_field = CharField()


class ProductFilter(django_filters.FilterSet):
    search = django_filters.CharFilter(
        method="filter_search",
        max_length=NAME_MAX_LENGTH,
        # Method filters have no model field to take a label from: without
        # one, the browsable API's form says "[invalid name]:".
        label="Name contains",
        help_text="Name contains this (case-insensitive).",
    )
    min_price = PriceFilter(
        field_name="price",
        lookup_expr="gte",
        label="Minimum price",
        help_text="Price at least this (inclusive).",
    )
    max_price = PriceFilter(
        field_name="price",
        lookup_expr="lte",
        label="Maximum price",
        help_text="Price at most this (inclusive).",
    )
    in_stock = django_filters.ChoiceFilter(
        choices=[("true", "true"), ("false", "false")],
        method="filter_in_stock",
        label="In stock",
        help_text="true: quantity > 0; false: quantity = 0.",
    )

    class Meta:
        model = Product
        fields = ["search", "min_price", "max_price", "in_stock"]

    def filter_search(self, queryset, name, value):
        if not value:
            return queryset
        if connections[queryset.db].vendor == "sqlite":
            # SQLite's LIKE and lower() fold ASCII only; "Ü" must find "ü".
            return queryset.alias(folded_name=CaseFold("name")).filter(folded_name__contains=fold_case(value))
        return queryset.filter(name__icontains=value)

    def filter_in_stock(self, queryset, name, value):
        return queryset.filter(quantity__gt=0) if value == "true" else queryset.filter(quantity=0)

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        queryset = super().filter_queryset(queryset)
        for candidates in self._candidate_queries(queryset.db):
            ids = candidates(NARROW_LIMIT + 1)
            if len(ids) <= NARROW_LIMIT:
                return queryset.filter(pk__in=ids)
        return queryset

    def _candidate_queries(self, using: str):
        """Yield, per active filter, a function returning up to N matching ids through its index."""
        data = self.form.cleaned_data
        base = Product.objects.using(using).order_by()
        term = data.get("search")
        if term and len(term) >= TRIGRAM:
            yield lambda n: _search_ids(base, term, n)
        if data.get("in_stock") == "true":
            # in_stock=false (quantity = 0) needs no narrowing: the (quantity,
            # <ordering>, name) indexes give its pages in order.
            stock = self.filter_in_stock(base, "in_stock", data["in_stock"]).order_by("quantity")
            yield lambda n: list(stock.values_list("pk", flat=True)[:n])
        prices = base
        for bound in ("min_price", "max_price"):
            if data.get(bound) is not None:
                prices = self.filters[bound].filter(prices, data[bound])
        if prices is not base:
            ordered = prices.order_by("price")
            yield lambda n: list(ordered.values_list("pk", flat=True)[:n])


def _search_ids(base: QuerySet, term: str, limit: int) -> list[int]:
    """Return up to ``limit`` ids whose name contains ``term``, through the trigram index."""
    connection = connections[base.db]
    if connection.vendor == "sqlite":
        # An FTS5 phrase of trigrams is a substring match (case-folded);
        # inside double quotes only '"' is special.
        phrase = '"' + term.replace('"', '""') + '"'
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT rowid FROM products_product_name_fts WHERE products_product_name_fts MATCH %s LIMIT %s",
                [phrase, limit],
            )
            return [row[0] for row in cursor.fetchall()]
    if connection.vendor == "postgresql":
        # No ORDER BY: the GIN index answers in its own order.
        return list(base.filter(name__icontains=term).values_list("pk", flat=True)[:limit])
    return list(range(limit))  # no index: never narrow


class ProductFilterBackend(DjangoFilterBackend):
    """django-filter's backend, skipped when the request names none of the filters.

    Building the filter form costs a quarter of a list page; with no filter
    parameter it would validate nothing and return the queryset unchanged.
    """

    def filter_queryset(self, request, queryset, view):
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is None:
            return queryset
        # A prefix match keeps widgets that add suffixes (price_min...) filtered.
        names = tuple(filterset_class.base_filters)
        if not any(key.startswith(names) for key in request.query_params):
            return queryset
        return super().filter_queryset(request, queryset, view)


class _FullPath:
    """What DRF's ``add_query_param`` tag reads of a request: its full path."""

    def __init__(self, path: str) -> None:
        self.path = path

    def get_full_path(self) -> str:
        return self.path


class ProductOrderingFilter(OrderingFilter):
    """``ordering=<field>`` or ``-<field>``; anything else answers 400.

    One field only: the keyset paginator orders by it plus ``name``.
    """

    ordering_description = (
        "Sort by one of: " + ", ".join(ORDERING_FIELDS) + " (prefix '-' for descending); "
        "ties are broken by name. Default: name."
    )

    def get_ordering_term(self, request, queryset, view) -> str:
        """Return the requested term (e.g. "-price"), the view's default, or raise 400."""
        raw = request.query_params.get(self.ordering_param)
        if raw is None or raw == "":
            default = self.get_default_ordering(view) or ["name"]
            return default[0]
        allowed = {f for f in getattr(view, "ordering_fields", ORDERING_FIELDS)}
        term = raw.strip()
        if term.lstrip("-") not in allowed or term.count("-") > 1 or "," in term:
            raise ValidationError(
                {
                    self.ordering_param: [
                        f'"{raw[:50]}" is not a valid ordering. Use one of: '
                        + ", ".join(sorted(allowed))
                        + ", optionally prefixed with '-'."
                    ]
                }
            )
        return term

    def get_ordering(self, request, queryset, view):
        return [self.get_ordering_term(request, queryset, view)]

    def get_template_context(self, request, queryset, view) -> dict:
        # The browsable API's ordering links start at the first page: the
        # page's cursor was issued for the current ordering, and another
        # ordering refuses it (400 "Invalid cursor.").
        context = super().get_template_context(request, queryset, view)
        cursor = getattr(getattr(view, "paginator", None), "cursor_query_param", None)
        if cursor:
            context["request"] = _FullPath(remove_query_param(request.get_full_path(), cursor))
        return context

    def get_schema_operation_parameters(self, view) -> list[dict]:
        fields = list(getattr(view, "ordering_fields", ORDERING_FIELDS))
        return [
            {
                "name": self.ordering_param,
                "required": False,
                "in": "query",
                "description": self.ordering_description,
                "schema": {"type": "string", "enum": fields + ["-" + f for f in fields]},
            }
        ]
