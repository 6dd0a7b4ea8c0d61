"""Read paths: what the API shows of a product, straight from the database."""

from __future__ import annotations

import weakref
from datetime import UTC, datetime
from decimal import Decimal
from itertools import chain
from typing import NamedTuple

import orjson
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models.query import BaseIterable
from django.db.models.sql.constants import MULTI

from . import metrics
from .models import Product
from .validators import PRICE_FORMAT

REPRESENTATION_FIELDS = ("id", "name", "price", "quantity", "created_at", "updated_at")


def _timestamp(value: datetime) -> str:
    # The text DRF's DateTimeField writes: an aware value in UTC (TIME_ZONE),
    # "Z" for "+00:00". Only a row written outside Django, with an offset,
    # is not in UTC already.
    if value.utcoffset():
        value = value.astimezone(UTC)
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def product_representation(
    *, id: int, name: str, price: Decimal, quantity: int, created_at: datetime, updated_at: datetime
) -> dict:
    """Return the API's dict for a product: price as a string, ISO timestamps."""
    return _representation(id, name, price, quantity, created_at, updated_at, _timestamp)


def _representation(id_, name, price, quantity, created_at, updated_at, timestamp) -> dict:
    # The one place the API's dict is built; ``timestamp`` formats the two
    # timestamps (_timestamp, or _stored_timestamp for SQLite's naive UTC).
    return {
        "id": id_,
        "name": name,
        "price": format(price, PRICE_FORMAT),
        "quantity": quantity,
        "created_at": timestamp(created_at),
        "updated_at": timestamp(updated_at),
    }


def _stored_timestamp(value: datetime) -> str:
    # SQLite as Django writes it: naive UTC, whose ISO text plus "Z" is what
    # the make-aware step and _timestamp() give. A row written outside Django
    # with an offset comes back aware: as the ORM path formats it.
    return value.isoformat() + "Z" if value.tzinfo is None else _timestamp(value)


def legacy_shape(product: dict) -> dict:
    """Return the original Flask service's body for a product representation."""
    return {
        "type": "Product",
        "count": 1,
        "attributes": {"name": product["name"], "price": product["price"], "quantity": product["quantity"]},
    }


def product_json(name: str, using: str = DEFAULT_DB_ALIAS) -> bytes | None:
    """Return the product's JSON representation, or None when it does not exist."""
    connection = connections[using]
    compiled = _compiled.get(connection)
    if compiled is None:
        compiled = _compiled[connection] = _compile(using)
    if compiled.direct_sql is not None and _direct_allowed(connection):
        row = _read_direct(connection, compiled.direct_sql, name)
        converters, naive_utc = compiled.direct_converters, True
    else:
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, [name])
            row = cursor.fetchone()
        converters, naive_utc = compiled.converters, False
    if row is None:
        return None
    values = _converted(row, converters, connection)
    product = _representation(*values, _stored_timestamp if naive_utc else _timestamp)
    return compact(orjson.dumps(product))


def _converted(row, converters: list[tuple[int, list, object]], connection) -> list:
    """Return ``row``'s values with the ORM's converters applied (``compiler.get_converters``)."""
    values = list(row)
    for position, functions, expression in converters:
        value = values[position]
        for function in functions:
            value = function(value, expression, connection)
        values[position] = value
    return values


def compact(data: bytes) -> bytes:
    """Return ``data`` in a bytes object of its own size.

    orjson writes into a 4 KiB buffer and hands it over without giving the
    rest back, so a small product kept in the near cache or the fast path's
    answers held the whole buffer. The copy costs far less than the read
    (both measured in docs/performance.md, "Worker memory").
    """
    return bytes(memoryview(data))


# A cache miss is the read the service makes most after a hit; building the
# same ORM query for it every time costs more than running it. The ORM
# compiles the query (SQL and the backend's value converters) once per
# connection; each miss then only executes it.
#
# On SQLite with UTC timestamps it goes one step further (what it saves:
# docs/performance.md, "Random names from cold"): the compiled SQL runs on the
# sqlite3 connection Django opened, without Django's cursor wrapper, and the
# timestamps skip the make-aware step (as RepresentationIterable does). It
# does so only while nothing could tell the difference: the connection is
# open and not in a failed transaction, no query is being logged (DEBUG,
# assertNumQueries, CaptureQueriesContext), and the only execute wrapper is
# the metrics' own count, which the direct read makes itself. Database errors
# still come out as Django's (wrap_database_errors). Otherwise, and on every
# other database, the read goes through Django's cursor. products.W040
# (manage.py check) says when SQLite runs without it.
_PLACEHOLDER_NAME = "products.selectors:name"
_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TIMESTAMPS = (4, 5)  # positions of created_at and updated_at in REPRESENTATION_FIELDS


class _Compiled(NamedTuple):
    sql: str
    converters: list[tuple[int, list, object]]
    direct_sql: str | None  # the SQL for the sqlite3 connection; None: no direct read here
    direct_converters: list[tuple[int, list, object]]


def _compile(using: str) -> _Compiled:
    query = (
        Product.objects.using(using).filter(name=_PLACEHOLDER_NAME).values_list(*REPRESENTATION_FIELDS)[:1]
    )
    compiler = query.query.get_compiler(using=using)
    sql, params = compiler.as_sql()
    if list(params) != [_PLACEHOLDER_NAME]:  # pragma: no cover - a backend that inlines differently
        raise RuntimeError(f"unexpected parameters for the product query: {params!r}")
    converters = _converters(compiler, compiler.select)
    connection = connections[using]
    if not direct_read_configured(connection):
        return _Compiled(sql, converters, None, [])
    direct = [entry for entry in converters if entry[0] not in _TIMESTAMPS]
    return _Compiled(sql, converters, _sqlite_sql(sql), direct)


def _converters(compiler, select) -> list[tuple[int, list, object]]:
    """Return (position, converter functions, expression) for the columns of ``select``."""
    found = compiler.get_converters([column for column, _sql, _alias in select])
    return [(position, functions, expression) for position, (functions, expression) in found.items()]


def _sqlite_sql(sql: str) -> str:
    """Return ``sql`` as SQLiteCursorWrapper.convert_query sends it: "%s" -> "?"."""
    from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX

    return FORMAT_QMARK_REGEX.sub("?", sql).replace("%%", "%")


def forget_compiled_reads_on_setting_change(setting: str, **kwargs) -> None:
    """Compile the product read again once the settings it was built for change (tests)."""
    if setting in ("USE_TZ", "TIME_ZONE", "DATABASES", "PRODUCT_SQLITE_DIRECT_READ"):
        _compiled.clear()
        _page_shapes.clear()


def _stores_naive_utc(connection) -> bool:
    # SQLite with USE_TZ and UTC: timestamps come back as naive datetimes in UTC.
    return connection.vendor == "sqlite" and settings.USE_TZ and connection.timezone_name == "UTC"


def direct_read_configured(connection) -> bool:
    """Return True when ``connection``'s settings allow the direct SQLite product read (and ask for it)."""
    return settings.PRODUCT_SQLITE_DIRECT_READ and _stores_naive_utc(connection)


def _direct_allowed(connection) -> bool:
    return (
        connection.connection is not None
        and not connection.needs_rollback
        and not connection.queries_logged
        and connection.execute_wrappers == [metrics.count_query]
    )


def _read_direct(connection, sql: str, name: str):
    metrics.count_query_direct(connection.alias)
    with connection.wrap_database_errors:
        return connection.connection.execute(sql, (name,)).fetchone()


def name_taken(name: str, exclude_pk: int | None = None, using: str = DEFAULT_DB_ALIAS) -> bool:
    """Return True when another product already has ``name``.

    Plain SQL on the connection: every create asks this, and building the ORM
    query for it cost more than running it.
    """
    connection = connections[using]
    quote = connection.ops.quote_name
    meta = Product._meta
    sql = (
        f"SELECT 1 FROM {quote(meta.db_table)} WHERE {quote(meta.get_field('name').column)} = %s"
        + ("" if exclude_pk is None else f" AND {quote(meta.pk.column)} <> %s")
        + " LIMIT 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [name] if exclude_pk is None else [name, exclude_pk])
        return cursor.fetchone() is not None


class RepresentationIterable(BaseIterable):
    """Rows of ``queryset.values(*REPRESENTATION_FIELDS)`` as the API's dicts, converted once.

    The list endpoint's rows go straight from the cursor into the shape
    product_representation() builds, with no model instance and no dict in
    between. On SQLite, which stores naive UTC timestamps, the ORM's
    make-aware step is skipped: the naive value's ISO text plus "Z" is what the
    aware one would give.
    """

    def __iter__(self):
        queryset = self.queryset
        compiler = queryset.query.get_compiler(queryset.db)
        if tuple(queryset.query.values_select) != REPRESENTATION_FIELDS or queryset.query.annotation_select:
            raise TypeError("RepresentationIterable needs values(*REPRESENTATION_FIELDS)")
        results = compiler.execute_sql(MULTI, chunked_fetch=self.chunked_fetch, chunk_size=self.chunk_size)
        fields = [column[0] for column in compiler.select[: compiler.col_count]]
        converters = compiler.get_converters(fields)
        connection = compiler.connection
        naive_utc = _stores_naive_utc(connection)
        if naive_utc:
            for position in _TIMESTAMPS:  # datetimes already, naive UTC
                converters.pop(position, None)
        rows = chain.from_iterable(results)
        if converters:
            rows = compiler.apply_converters(rows, converters)
        timestamp = _stored_timestamp if naive_utc else _timestamp
        for row in rows:
            yield _representation(*row, timestamp)


def representations(queryset):
    """Return ``queryset`` yielding the API's product dicts (see RepresentationIterable)."""
    queryset = queryset.values(*REPRESENTATION_FIELDS)
    queryset._iterable_class = RepresentationIterable
    return queryset


# The list's page read, compiled once per shape. A page is the same query
# every time but for the cursor's position: building it (values, order_by,
# filter, slice) and compiling it cost more than SQLite's reading of 51 rows
# (docs/performance.md, "List, first page of 50"). So, on the configuration
# the direct product read runs on (above: SQLite, UTC, nothing logging
# queries, the metrics' count the only execute wrapper), an unfiltered page
# runs SQL the ORM compiled for its shape, on SQLite's own connection, and
# its rows take RepresentationIterable's conversions. Everything else (a
# filtered list, PostgreSQL, DEBUG, assertNumQueries) goes through the ORM.
_PAGE_SHAPES_KEPT = 64  # per connection; page_size can take 500 values
_page_shapes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Two sentinels of each sort key's type: compiling with both shows where the
# position's value and name go among the parameters.
_SENTINELS = {
    "DecimalField": (Decimal("1.25"), Decimal("2.5")),
    "PositiveIntegerField": (17, 29),
    "DateTimeField": (
        datetime(2001, 2, 3, 4, 5, 6, 7, tzinfo=UTC),
        datetime(2002, 3, 4, 5, 6, 7, 8, tzinfo=UTC),
    ),
}
_SENTINEL_NAMES = ("products.selectors:first", "products.selectors:second")


class _CompiledPage(NamedTuple):
    sql: str  # for the sqlite3 connection
    converters: list[tuple[int, list, object]]  # all but the timestamps'
    slots: tuple  # per parameter: "value", "name", or ("constant", value)
    field: object  # the sort key's model field when a position takes part, else None


def representation_page(queryset, order: tuple[str, ...], limit: int, after=None) -> list[dict]:
    """Return the first ``limit`` rows of ``representations(queryset)`` ordered by ``order``.

    ``after`` is None, or ``(make_filter, value, name)``: the rows must also
    match ``make_filter(value, name)``, a Q that depends only on its two
    arguments (the keyset position). The result is what ``list(queryset.
    order_by(*order).filter(make_filter(value, name))[:limit])`` gives.
    """
    connection = connections[queryset.db]
    if _page_direct_allowed(queryset, connection):
        key = (tuple(order), limit, None if after is None else getattr(after[0], "__func__", after[0]))
        shapes = _page_shapes.get(connection)
        if shapes is None:
            shapes = _page_shapes[connection] = {}
        compiled = shapes.get(key)
        if compiled is None and key not in shapes:
            if len(shapes) >= _PAGE_SHAPES_KEPT:
                shapes.clear()
            compiled = shapes[key] = _compile_page(queryset, order, limit, after, connection)
        if compiled is not None:
            return _read_page_direct(connection, compiled, after)
    queryset = queryset.order_by(*order)
    if after is not None:
        make_filter, value, name = after
        queryset = queryset.filter(make_filter(value, name))
    return list(queryset[:limit])


def _page_direct_allowed(queryset, connection) -> bool:
    query = queryset.query
    return (
        queryset._iterable_class is RepresentationIterable
        and queryset.model is Product
        and tuple(query.values_select) == REPRESENTATION_FIELDS
        and not query.where
        and not query.annotations
        and not query.extra
        and not query.extra_tables
        and len(query.alias_map) <= 1  # the product table alone: no join
        and not query.distinct
        and not query.combinator
        and not query.is_sliced
        and query.standard_ordering
        and not query.select_for_update
        and direct_read_configured(connection)
        and _direct_allowed(connection)
    )


def _compile_page(queryset, order, limit, after, connection) -> _CompiledPage | None:
    def compiled(value=None, name=None):
        page = queryset.order_by(*order)
        if after is not None:
            page = page.filter(after[0](value, name))
        compiler = page[:limit].query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        return compiler, sql, list(params)

    field = None
    if after is None:
        compiler, sql, params = compiled()
        if params:  # pragma: no cover - an unfiltered page has none
            return None
        slots = ()
    else:
        field = Product._meta.get_field(order[0].lstrip("-"))
        # Ordered by name, the position is the name alone (its value None).
        sentinels = (None, None) if field.name == "name" else _SENTINELS.get(field.get_internal_type())
        if sentinels is None:
            return None
        (compiler, sql, first), (_, other_sql, second) = (
            compiled(value, name) for value, name in zip(sentinels, _SENTINEL_NAMES, strict=True)
        )
        if other_sql != sql or len(first) != len(second):
            return None
        slots = []
        for one, two in zip(first, second, strict=True):
            if (one, two) == tuple(_page_value(field, value, connection) for value in sentinels):
                slots.append("value")
            elif (one, two) == _SENTINEL_NAMES:
                slots.append("name")
            elif one == two:
                slots.append(("constant", one))
            else:  # pragma: no cover - a parameter this read cannot rebuild
                return None
        slots = tuple(slots)
    converters = [
        entry
        for entry in _converters(compiler, compiler.select[: compiler.col_count])
        if entry[0] not in _TIMESTAMPS
    ]
    return _CompiledPage(_sqlite_sql(sql), converters, slots, field)


def _page_value(field, value, connection):
    # What the ORM's comparison lookups send for a value of the sort key.
    return field.get_db_prep_value(field.get_prep_value(value), connection, prepared=True)


def _read_page_direct(connection, compiled: _CompiledPage, after) -> list[dict]:
    params = ()
    if after is not None:
        _, value, name = after
        prepared = _page_value(compiled.field, value, connection)
        params = tuple(
            prepared if slot == "value" else name if slot == "name" else slot[1] for slot in compiled.slots
        )
    metrics.count_query_direct(connection.alias)
    with connection.wrap_database_errors:
        rows = connection.connection.execute(compiled.sql, params).fetchall()
    return [
        _representation(*_converted(row, compiled.converters, connection), _stored_timestamp) for row in rows
    ]


def products_json(names: list[str]) -> dict[str, bytes]:
    """Return {name: JSON representation} for the products that exist, in one query."""
    rows = Product.objects.filter(name__in=names).values(*REPRESENTATION_FIELDS)
    return {row["name"]: compact(orjson.dumps(product_representation(**row))) for row in rows}
