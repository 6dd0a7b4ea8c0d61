"""Model signal receivers that keep the product cache honest; wired in apps.ready()."""

from __future__ import annotations

from typing import Any

from . import cache
from .models import Product
from .querysets import invalidated_by_queryset


def remember_name_before_save(sender: type[Product], instance: Product, raw: bool, using: str, **kwargs: Any) -> None:
    """Record the stored name of a product about to be saved, for renames."""
    if instance.pk is None or hasattr(instance, "_loaded_name"):
        return
    instance._loaded_name = (
        Product._base_manager.using(using).filter(pk=instance.pk).values_list("name", flat=True).first()
    )


def invalidate_product_on_save(sender: type[Product], instance: Product, using: str, **kwargs: Any) -> None:
    """Invalidate the product (old and new name) after the save commits."""
    names = {instance.name}
    old = getattr(instance, "_loaded_name", None)
    if old:
        names.add(old)
    cache.invalidate_on_commit(names, using=using)
    instance._loaded_name = instance.name


def invalidate_product_on_delete(sender: type[Product], instance: Product, using: str, **kwargs: Any) -> None:
    """Invalidate the deleted product after the delete commits."""
    if invalidated_by_queryset():
        return  # QuerySet.delete() invalidates the whole batch at once
    names = {instance.name}
    old = getattr(instance, "_loaded_name", None)
    if old:
        names.add(old)
    cache.invalidate_on_commit(names, using=using)
