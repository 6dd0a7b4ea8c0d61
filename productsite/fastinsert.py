"""A new product's INSERT as ``Model.save()`` makes it, prepared once per connection.

For productsite.fastcreate: :func:`create` stands in for
``ProductSerializer.create`` (pre_save, each field's pre_save and database
value, the INSERT returning the id, the instance's state, post_save), with
the INSERT's SQL written once per connection by Django's own compiler. When
the model, its manager, queryset or save path, or the backend differ from
what this mirrors (:func:`save_path_problems`), it runs
``serializer.create`` instead.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, connections, models
from django.db.models.signals import post_save, pre_save

from products.models import Product
from products.serializers import ProductSerializer

logger = logging.getLogger(__name__)


def reset() -> None:
    """Forget the INSERTs prepared so far (the settings or the model changed: tests)."""
    _inserts.clear()


# What ProductSerializer.create runs (ModelSerializer.create -> QuerySet.create ->
# Model.save -> save_base -> _save_table -> _do_insert -> QuerySet._insert) must
# be Django's and DRF's own for create() to stand in for it.
_SAVE_PATH = {
    "save": models.Model,
    "save_base": models.Model,
    "_save_table": models.Model,
    "_save_parents": models.Model,
    "_do_insert": models.Model,
    "_prepare_related_fields_for_save": models.Model,
    "_validate_force_insert": models.Model,
}


def save_path_problems() -> list[str]:
    """Return why :func:`create` cannot stand in for ``ProductSerializer.create`` (empty: it can)."""
    from rest_framework.serializers import ModelSerializer

    problems = [
        f"Product overrides {name}"
        for name, owner in _SAVE_PATH.items()
        if next(klass for klass in Product.__mro__ if name in vars(klass)) is not owner
    ]
    if ProductSerializer.create is not ModelSerializer.create:
        problems.append("ProductSerializer overrides create")
    manager = Product._default_manager
    queryset = type(manager.get_queryset())
    if queryset.create is not models.QuerySet.create or queryset._insert is not models.QuerySet._insert:
        problems.append("Product's queryset overrides create or _insert")
    if any(
        "create" in vars(klass)
        for klass in type(manager).__mro__
        if klass is not models.Manager
        and issubclass(klass, models.Manager)
        and "_queryset_class" not in vars(klass)
    ):
        problems.append("Product's manager overrides create")
    meta = Product._meta
    if meta.proxy or meta.parents or meta.order_with_respect_to or meta.auto_created:
        problems.append("Product is a proxy, a child model, ordered with respect to another or auto-created")
    if (
        meta.auto_field is None
        or meta.pk is not meta.auto_field
        or list(meta.db_returning_fields) != [meta.pk]
    ):
        problems.append("Product's primary key is not an auto field returned alone by the INSERT")
    if any(f.generated or f.is_relation for f in meta.local_concrete_fields):
        problems.append("Product has generated or related fields")
    if any(f.many_to_many for f in meta.get_fields()):
        problems.append("Product has many-to-many fields")
    return problems


class _Insert:
    """The INSERT Django's compiler writes for one product on one connection, and how to read its id."""

    __slots__ = ("fields", "returning_params", "sql")

    def __init__(self, connection) -> None:
        from django.db.models.sql import InsertQuery

        meta = Product._meta
        self.fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field]
        query = InsertQuery(Product)
        query.insert_values(self.fields, [Product(name="-", price=0, quantity=0)])
        compiler = query.get_compiler(connection=connection)
        compiler.returning_fields = list(meta.db_returning_fields)
        [(self.sql, params)] = compiler.as_sql()
        self.returning_params = tuple(compiler.returning_params)
        cols = [f.get_col(meta.db_table) for f in compiler.returning_fields]
        if compiler.get_converters(cols) or len(params) != len(self.fields) + len(self.returning_params):
            raise NotImplementedError(
                "the INSERT's id needs converting or its parameters are not the fields'"
            )


_inserts: dict[tuple[str, str], _Insert | None] = {}


def _insert_for(connection) -> _Insert | None:
    key = (connection.alias, connection.vendor)
    if key not in _inserts:
        insert = None
        if connection.features.can_return_columns_from_insert and not save_path_problems():
            try:
                insert = _Insert(connection)
            except NotImplementedError:
                logger.warning("Fast creates save through the ORM's generic path on %s", connection.vendor)
        _inserts[key] = insert
    return _inserts[key]


class NotInserted(Exception):
    """The create wrote nothing (its INSERT failed, or something before it): Django answers."""


def create(serializer: ProductSerializer, attrs: dict, using: str) -> Product:
    """``serializer.create(attrs)`` on ``using``: the same signals and INSERT, without the generic save path.

    Model.save(force_insert=True) of a new product comes down to: pre_save,
    each field's pre_save (the timestamps) and database value, the INSERT
    returning the id, the instance's state, post_save. That is done here, with
    the INSERT's SQL written once per connection by Django's own compiler.
    Anything else (another backend, a changed model or save path) runs
    ``serializer.create``.
    """
    connection = connections[using]
    try:
        insert = _insert_for(connection)
    except Exception as exc:
        logger.exception("Fast create could not prepare its INSERT; handing the request to Django")
        raise NotInserted from exc
    if insert is None:
        try:
            return serializer.create(attrs)
        except DatabaseError as exc:  # the generic save path: a taken name, most likely
            raise NotInserted from exc
    instance = Product(**attrs)
    try:  # transaction.mark_for_rollback_on_error, as save_base runs it
        pre_save.send(sender=Product, instance=instance, raw=False, using=using, update_fields=None)
        params = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in insert.fields]
        with connection.cursor() as cursor:
            cursor.execute(insert.sql, (*params, *insert.returning_params))
            (pk,) = connection.ops.fetch_returned_insert_columns(cursor, insert.returning_params)
    except Exception as exc:
        if connection.in_atomic_block:
            connection.needs_rollback = True
            connection.rollback_exc = exc
        if not isinstance(exc, DatabaseError):
            logger.exception("Fast create failed before its INSERT; handing the request to Django")
        raise NotInserted from exc
    instance.pk = pk
    instance._state.db = using
    instance._state.adding = False
    post_save.send(
        sender=Product, instance=instance, created=True, update_fields=None, raw=False, using=using
    )
    return instance
