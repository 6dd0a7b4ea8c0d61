"""Invalidations this process could not deliver: kept until Redis answers, handed to the outbox.

:func:`missed` is called by products.cache when Redis did not take a delete
or a retirement. The miss is handed to :data:`hooks` (products.outbox
records it in the database, inside the writer's transaction when there is
one) and kept here; products.transport runs :meth:`Pending.deliver` before
any other command once Redis answers, and its probe makes that happen
within about 0.1 s of Redis answering, request or not.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from . import cachekeys, metrics, transport
from .transport import Client

logger = logging.getLogger("products.cache")

# Past this many names, an invalidation retires every bucket instead of
# deleting each name: one Redis command, and memory stays flat. One limit for
# the names pending here, the outbox's records and bulk writes (querysets).
INVALIDATE_BY_NAME_LIMIT = 1000

# Called with the names an invalidation could not deliver (None: every
# product); add_hook() in apps.ready() (products.outbox records them).
hooks: list[Callable[[frozenset[str] | None], None]] = []


def add_hook(function: Callable[[frozenset[str] | None], None]) -> None:
    """Hand every invalidation Redis did not take to ``function`` too (once, however often added)."""
    if function not in hooks:
        hooks.append(function)


class Pending:
    """The names (or "everything") this process owes Redis an invalidation for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: set[str] = set()
        self._everything = False
        self._misses = 0  # a delivery clears only what was pending when it started

    def add(self, names: frozenset[str] | None) -> None:
        with self._lock:
            self._misses += 1
            if names is None or len(self._names) + len(names) > INVALIDATE_BY_NAME_LIMIT:
                self._everything = True
                self._names.clear()
            elif not self._everything:
                self._names.update(names)
            metrics.set_pending_invalidations(1 if self._everything else len(self._names))

    def deliver(self, client: Client) -> None:
        """Delete the pending names, or retire every bucket; a RedisError leaves them pending."""
        with self._lock:
            everything, names, misses = self._everything, list(self._names), self._misses
        if everything:
            cachekeys.retire_all(client)
        elif names:
            cachekeys.delete(client, names)
        with self._lock:
            if self._misses == misses:  # else a newer miss asked for its own delivery
                self.clear()

    def clear(self) -> None:
        self._everything = False
        self._names.clear()
        metrics.set_pending_invalidations(0)


pending = Pending()


def _after_fork_in_child() -> None:
    # gunicorn forks workers from a master whose outbox applier (and its
    # probe) may be delivering at that moment: the lock would stay held.
    pending._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def missed(names: frozenset[str] | None, record: bool = True) -> None:
    """Keep a miss until Redis answers, and hand it to the hooks unless ``record`` is off."""
    transport.need_resync()  # first: a resync running now must not clear what this adds
    pending.add(names)
    # At DEBUG when a hook reports it (the outbox: a command's stderr, or a
    # WARNING a few times a minute) or it is a retry of one already reported
    # (the outbox applier's, every PRODUCT_CACHE_OUTBOX_RETRY in every
    # process); else at INFO.
    logger.log(
        logging.INFO if record and not hooks else logging.DEBUG,
        "Could not invalidate %s product(s) now; will retry when Redis answers",
        len(names or ()) or "all",
    )
    if record:
        for hook in hooks:
            hook(names)
