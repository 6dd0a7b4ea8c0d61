"""Signal receivers, wired in apps.ready(): model writes keep the product cache honest; new database connections get SQLite's casefold function and the query-count metric."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.migrations.operations import RunPython, RunSQL
from django.db.models.signals import pre_save

from . import cache, metrics, token_cache
from .models import Product
from .querysets import invalidated_by_queryset
from .validators import add_casefold_function


def remember_stored_name(sender: type[Product], instance: Product, using: str, **kwargs: Any) -> None:
    """Record the name stored for a product about to be saved or deleted.

    Read from the database, not from the instance: the instance may have been
    loaded with the name deferred, or before someone else renamed the row,
    and a rename must invalidate the name that readers actually cached.
    """
    if instance.pk is None or invalidated_by_queryset():
        instance._stored_name = None
        return
    in_transaction = transaction.get_connection(using).in_atomic_block
    if not in_transaction and kwargs.get("signal") is pre_save:
        # A save() in autocommit: Product._do_update reads it in the UPDATE's
        # own transaction (None stays when no UPDATE runs: an INSERT).
        instance._stored_name = None
        return
    # In a transaction, locked until the write commits (PostgreSQL; SQLite's
    # IMMEDIATE transaction already holds every writer off): read without the
    # lock, a rename committed between this read and the write's UPDATE,
    # which waited for that rename's lock, would go un-invalidated. The name
    # the rename set (cached by any reader since its commit) is the one this
    # write overwrites, or deletes.
    instance._stored_name = Product.stored_name(instance.pk, using, lock=in_transaction)


def _names(instance: Product) -> set[str]:
    # Never touch a deferred name: after a delete, loading it would query a
    # row that no longer exists (DoesNotExist, and the delete rolls back).
    # The stored name, read before the write, is the one readers cached.
    current = instance.__dict__.get("name")
    return {name for name in (current, getattr(instance, "_stored_name", None)) if name}


def invalidate_product_on_save(sender: type[Product], instance: Product, using: str, **kwargs: Any) -> None:
    """Invalidate the product (old and new name) after the save commits."""
    cache.invalidate_on_commit(_names(instance), using=using)


def invalidate_product_on_delete(sender: type[Product], instance: Product, using: str, **kwargs: Any) -> None:
    """Invalidate the deleted product after the delete commits."""
    if invalidated_by_queryset():
        return  # QuerySet.delete() invalidates the whole batch at once
    cache.invalidate_on_commit(_names(instance), using=using)


def invalidate_cached_tokens(sender, using: str | None = None, **kwargs: Any) -> None:
    """Drop every cached token authentication: a token, user, group or permission changed."""
    action = kwargs.get("action")
    if action is not None and not action.startswith("post_"):
        return  # m2m_changed: act once the links are written
    token_cache.invalidate_on_commit(using)


def retire_cache_after_data_migrations(sender, plan=None, **kwargs: Any) -> None:
    """Retire the cache generation once ``migrate`` has run a data migration.

    A data migration's QuerySet writes invalidate as they commit (the manager
    has ``use_in_migrations``), but ``save()``/``delete()`` on a historical
    instance sends signals for the historical class, which these receivers do
    not hear, and RunSQL bypasses the ORM. One retirement covers them all.
    """
    if any(
        isinstance(operation, (RunPython, RunSQL))
        for migration, _ in plan or ()
        for operation in migration.operations
    ):
        cache.retire_generation()


def register_sqlite_functions(sender, connection, **kwargs: Any) -> None:
    """Give SQLite connections Unicode case folding (search is case-insensitive)."""
    if connection.vendor == "sqlite":
        add_casefold_function(connection.connection)


def count_queries_in_metrics(sender, connection, **kwargs) -> None:
    """Count every statement on this connection in the db_queries_total metric."""
    if metrics.count_query not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, metrics.count_query)
