"""Bulk write paths that keep the product cache honest.

``QuerySet.update()``, ``bulk_create()`` and ``bulk_update()`` send no model
signals, so the receivers in ``receivers.py`` never see them; these overrides
invalidate the affected names after the transaction commits.
``QuerySet.delete()`` does send ``post_delete`` per row, but invalidating row by
row costs a Redis round trip each; the override invalidates once for the lot
and tells the receiver to stand aside.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import connections, models, transaction
from django.utils import timezone

from . import cache
from .missed import INVALIDATE_BY_NAME_LIMIT  # above it, retire the generation instead of loading every name

_local = threading.local()


@contextmanager
def _receivers_stand_aside() -> Iterator[None]:
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def invalidated_by_queryset() -> bool:
    """Return True while a bulk operation here owns the invalidation."""
    return getattr(_local, "depth", 0) > 0


class ProductQuerySet(models.QuerySet):
    @contextmanager
    def one_snapshot(self) -> Iterator[None]:
        """Run the block in a transaction whose every read sees one state of the database.

        For a check and the write it allows (an admin confirmation: "delete
        these 2,000", "create these 3,000"), without holding other writers
        off. PostgreSQL: REPEATABLE READ, so a product created after the
        snapshot is neither counted nor updated nor deleted (a create of a
        name the block then creates is refused by the unique index), and
        one changed after it fails the block's write with a serialization
        failure, and nothing is written (the caller says so). Inside a transaction already under
        way, whose level is set, other writers of the table wait instead
        (``LOCK TABLE ... SHARE ROW EXCLUSIVE``). SQLite: the transaction
        begins IMMEDIATE (settings), so no other writer commits meanwhile.
        """
        connection = connections[self.db]
        outermost = not connection.in_atomic_block
        with transaction.atomic(using=self.db):
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    if outermost:
                        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    else:
                        table = connection.ops.quote_name(self.model._meta.db_table)
                        cursor.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
            yield

    def _lock_rows(self) -> list[tuple[int, str]]:
        """Lock and name the matching rows (up to one past the by-name limit).

        update() and delete() then change exactly these rows, so a row that
        starts matching meanwhile cannot slip through un-invalidated.
        """
        return list(
            self.select_for_update().order_by().values_list("pk", "name")[: INVALIDATE_BY_NAME_LIMIT + 1]
        )

    def _only(self, rows: list[tuple[int, str]]) -> models.QuerySet:
        return self.model._base_manager.using(self.db).filter(pk__in=[pk for pk, _ in rows])

    def update(self, **kwargs: Any) -> int:
        """Update the rows, keep ``updated_at`` true, and invalidate after commit."""
        kwargs.setdefault("updated_at", timezone.now())
        with transaction.atomic(using=self.db, savepoint=False):
            rows = self._lock_rows()
            if len(rows) > INVALIDATE_BY_NAME_LIMIT:
                count = super().update(**kwargs)
                cache.retire_generation_on_commit(using=self.db)
                return count
            names = {name for _, name in rows}
            count = models.QuerySet.update(self._only(rows), **kwargs)
            # The new name may be cached as absent: forget it too. An
            # expression's result only the database knows.
            if isinstance(kwargs.get("name"), str):
                names.add(kwargs["name"])
            elif "name" in kwargs:
                names.update(self._only(rows).values_list("name", flat=True))
            cache.invalidate_on_commit(names, using=self.db)
            return count

    update.alters_data = True

    def delete(self) -> tuple[int, dict[str, int]]:
        """Delete the rows and invalidate their names once, after commit."""
        with transaction.atomic(using=self.db, savepoint=False):
            rows = self._lock_rows()
            with _receivers_stand_aside():
                if len(rows) > INVALIDATE_BY_NAME_LIMIT:
                    result = super().delete()
                    cache.retire_generation_on_commit(using=self.db)
                    return result
                # Delete exactly the rows we named (see update()).
                result = models.QuerySet.delete(self._only(rows))
            cache.invalidate_on_commit({name for _, name in rows}, using=self.db)
            return result

    delete.alters_data = True
    delete.queryset_only = True

    def update_without_invalidation(self, **kwargs: Any) -> int:
        """Run a plain UPDATE; the caller owns invalidating what it changed."""
        return super().update(**kwargs)

    update_without_invalidation.alters_data = True

    def bulk_create(self, objs: Iterable[models.Model], *args: Any, **kwargs: Any) -> list:
        """Create (or upsert) the objects; invalidate their names, and the names an upsert replaced.

        ``update_conflicts`` with ``name`` among ``update_fields`` renames the
        rows the objects conflict with on another unique field (the primary
        key): their stored names, which readers may have cached, are read
        (and locked) first.
        """
        objs = list(objs)
        options = inspect.signature(models.QuerySet.bulk_create).bind(self, objs, *args, **kwargs).arguments
        with transaction.atomic(using=self.db, savepoint=False):
            replaced: set[str] = set()
            if options.get("update_conflicts") and "name" in (options.get("update_fields") or ()):
                pks = [obj.pk for obj in objs if obj.pk is not None]
                if pks:
                    rows = self.model._base_manager.using(self.db).select_for_update().filter(pk__in=pks)
                    replaced.update(rows.values_list("name", flat=True))
            created = super().bulk_create(objs, *args, **kwargs)
            cache.invalidate_on_commit({*(obj.name for obj in created), *replaced}, using=self.db)
        return created

    bulk_create.alters_data = True

    def bulk_update(
        self, objs: Iterable[models.Model], fields: Sequence[str], *args: Any, **kwargs: Any
    ) -> int:
        """Update the objects; invalidate their new names too.

        Django's bulk_update() runs ``filter(pk__in=...).update()``, so the
        update() above already locks the rows and invalidates the names they
        had; the names the objects carry now are the rest.
        """
        objs = list(objs)
        count = super().bulk_update(objs, fields, *args, **kwargs)
        cache.invalidate_on_commit({obj.name for obj in objs}, using=self.db)
        return count

    bulk_update.alters_data = True


class ProductManager(models.Manager.from_queryset(ProductQuerySet)):
    """The product manager, also in migrations and as the base manager.

    ``use_in_migrations`` gives data migrations (``apps.get_model``) these
    invalidating update()/delete()/bulk_*; ``Meta.base_manager_name`` gives
    them to ``Product._base_manager`` too.
    """

    use_in_migrations = True
