"""Which Redis server the product cache was last adopted on, recorded in the database.

products.transport checks the server behind every new connection (its
``run_id``), and cachekeys.adopt retires every bucket that another server
instance set. A run_id alone cannot tell a server that was *left and came
back*: a REDIS_URL changed and changed back, a proxy switched back, the old
master of a split-brain Sentinel. That server still holds the values of
before the switch, under its own run_id, while the writes since went to the
other server. So the database keeps the run_id adopted last and an epoch
that grows at every switch, and a bucket counts only when it is marked with
this server's run_id *and* the current epoch: the first process to meet a
server other than the last one bumps the epoch, and every bucket of every
server marked before is retired when it is next adopted.

One Redis or Sentinel (one server holds the whole cache at a time). The
masters of a Redis Cluster are all current at once: their buckets keep the
run_id alone (docs/cache.md says what that leaves uncovered).
"""

from __future__ import annotations

import logging
import secrets

from django.conf import settings
from django.db import router, transaction

from .models import CacheServer

logger = logging.getLogger("products.cache")


def marker(run_id: str) -> str:
    """Return what this deployment's buckets on server ``run_id`` must be marked with to count."""
    try:
        return f"{run_id}:{_epoch(run_id)}"
    except Exception as exc:  # DatabaseError, or no database at all here
        # Unknown: trust nothing this server holds (a mark no bucket has).
        logger.warning(
            "Cannot read which Redis server the cache was last on (%s): retiring every bucket of %s",
            type(exc).__name__,
            run_id,
        )
        return f"{run_id}:unrecorded-{secrets.token_hex(8)}"


def _epoch(run_id: str) -> int:
    key = str(settings.CACHES["default"].get("KEY_PREFIX", ""))[:200]
    using = router.db_for_write(CacheServer)
    # A savepoint inside a caller's transaction: a failure leaves it usable.
    with transaction.atomic(using=using):
        server, created = (
            CacheServer.objects.using(using)
            .select_for_update()
            .get_or_create(key=key, defaults={"run_id": run_id, "epoch": 1})
        )
        if not created and server.run_id != run_id:
            server.run_id, server.epoch = run_id, server.epoch + 1
            server.save(using=using, update_fields=["run_id", "epoch"])
    return server.epoch
