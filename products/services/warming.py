"""Cache warm-up: put products into the cache ahead of the readers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from products import cache
from products.models import Product
from products.selectors import products_json
from products.services import ProgressCallback


class WarmUpStopped(cache.CacheUnavailable):
    """Redis stopped answering during the warm-up; ``stored`` products were in the cache by then."""

    def __init__(self, stored: int, reason: str) -> None:
        super().__init__(reason)
        self.stored = stored


def product_cache_warm(
    *,
    names: Iterable[str] | None = None,
    chunk_size: int = 1000,
    on_progress: ProgressCallback | None = None,
) -> cache.WarmedBatch:
    """Put products into the cache: the given names, or every product when None.

    Return the cache's own tally (stored, skipped, missing) summed over the
    chunks. Raises cache.CacheUnavailable when Redis does not answer, before
    or during the warm-up.
    """
    if cache.status_for_bulk() != "ok":
        raise cache.CacheUnavailable()  # why: transport.last_failure() (the commands' redis_down_message)
    if names is None:
        names = _every_name(chunk_size)
    stored = skipped = 0
    missing: list[str] = []
    try:
        for chunk in _chunks(names, chunk_size):
            warmed = _warm(chunk, on_progress)
            stored, skipped = stored + warmed.stored, skipped + warmed.skipped
            missing += warmed.missing
    except cache.CacheUnavailable as exc:
        raise WarmUpStopped(stored, str(exc)) from exc
    finally:
        # A database cursor left open until the generator is collected would
        # be closed after the connection is, printing a traceback at exit.
        close = getattr(names, "close", None)
        if close is not None:
            close()
    return cache.WarmedBatch(stored, skipped, missing)


def _every_name(page_size: int) -> Iterator[str]:
    """Every product's name, by primary key, one finished query per page.

    Not ``.iterator()``: on SQLite its cursor, open between chunks, holds one
    read snapshot on the connection, so a later chunk's rows would be read as
    they were before writes that committed (and invalidated) since, under
    leases taken after those writes: old rows stored for
    ``PRODUCT_CACHE_TIMEOUT``.
    """
    last = None
    while True:
        rows = Product.objects.order_by("pk")
        if last is not None:
            rows = rows.filter(pk__gt=last)
        page = list(rows.values_list("pk", "name")[:page_size])
        if not page:
            return
        last = page[-1][0]
        for _, name in page:
            yield name


def _chunks(names: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for name in names:
        chunk.append(name)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _warm(chunk: list[str], on_progress: ProgressCallback | None) -> cache.WarmedBatch:
    # Leases first, then one query for the batch: see cache.warm_products.
    warmed = cache.warm_products(chunk, load_many=products_json)
    if on_progress is not None:
        on_progress(len(chunk))
    return warmed
