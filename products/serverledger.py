"""Which Redis server the product cache was last adopted on, recorded in the database.

products.transport checks the server behind every new connection (its
``run_id``), and cachekeys.adopt retires every bucket that another server
instance set. A run_id alone cannot tell a server that was *left and came
back*: REDIS_URL changed and changed back (another server, another database
number, another key prefix), a proxy switched back, the old master of a
split-brain Sentinel. That server still holds the values of before the
switch while the writes since went elsewhere. So the database keeps the
server adopted last (run_id, database number, key prefix) and an epoch that
grows at every switch, and a bucket counts only when marked with this
server's run_id *and* the current epoch: the first process to meet another
server than the last one bumps the epoch, and every bucket marked before is
retired when its server is next adopted.

The usual case, the same server as last time, is a plain read (no lock,
inside a caller's transaction or not). A switch is written only outside a
caller's transaction, in a short one of its own with a short lock wait:
inside one, the bump would roll back with it, and its lock would last as
long as it. A new connection that would need a switch written inside a
transaction, or while the database fails, fails instead (the breaker's
usual path; a write's invalidation is then recorded and sent after its
commit).

One Redis or Sentinel (one server holds the whole cache at a time). The
masters of a Redis Cluster are all current at once: their buckets keep the
run_id alone (docs/cache.md says what that leaves uncovered).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from contextlib import contextmanager

from django.conf import settings
from django.db import DatabaseError, connections, router, transaction
from redis.exceptions import ConnectionError

from . import cache, nearcache, transport
from .dberrors import first_line
from .models import CacheServer

logger = logging.getLogger("products.cache")

KEY = "default"  # the Django cache alias whose server this is
LOCK_WAIT_MS = 250  # longest wait for the ledger's lock (a Redis connect waits on it)

# (server, epoch) this process last marked its buckets with; None before, or
# once another process moved the record (recheck_if_moved).
_adopted: tuple[str, int] | None = None
# The process whose applier thread re-checks every poll (products.applier);
# any other process (a shell, an import) re-checks after each delivered write.
polled_in_pid: int | None = None
WARN_EVERY = 60.0  # seconds between warnings while processes keep moving the record
_warned_at: float | None = None
# Servers other processes recorded lately: meeting one again within
# WARN_EVERY (the record moved back to it) is the warning's case.
_recorded_by_others: dict[str, float] = {}
_rechecks_unreported = 0


def marker(run_id: str, db: int) -> str:
    """Return what this deployment's buckets on server ``run_id`` (database ``db``) must be marked with.

    Raises redis's ConnectionError (the connection fails, as a timeout would)
    when the switch cannot be recorded now: inside a transaction (a bump
    would roll back with it; an invalidation there is recorded and sent after
    the commit) or with the database failing. A server adopted without its
    switch recorded would be trusted again the day the cache came back to
    the server before it.
    """
    using = router.db_for_write(CacheServer)
    prefix = str(settings.CACHES["default"].get("KEY_PREFIX", ""))
    server = f"{run_id}/{db}/{hashlib.blake2b(prefix.encode(), digest_size=8).hexdigest()}"
    try:
        found = _recorded(using)
        if found is not None and found[0] == server:
            epoch = found[1]  # the usual case: the same server, read without a lock
        elif cache.in_transaction(using):
            raise ConnectionError(
                "a new Redis server is adopted outside a transaction; retried after the commit"
            )
        else:
            epoch = _switch(using, server)
        global _adopted
        _adopted = (server, epoch)
        return f"{run_id}:{epoch}"
    except DatabaseError as exc:
        raise ConnectionError(
            f"cannot record which Redis server the cache is on ({type(exc).__name__}: {first_line(exc)})"
        ) from exc
    except ConnectionError:
        raise
    except Exception as exc:  # no database in this process (a test that forbids it)
        logger.warning("No record of the Redis server the cache was on (%s): retiring every bucket", exc)
        return _untrusted(run_id)


_UNREAD = object()


def read_watched_record(**annotations) -> tuple | None:
    """Return (server, epoch, *annotations) of the ledger's row in one query, for the applier's poll.

    None when this process watches no server yet (it has not adopted one:
    :func:`recheck_if_moved` would not query); ``()`` when no row exists.
    """
    if _adopted is None:
        return None
    row = (
        CacheServer.objects.using(router.db_for_write(CacheServer))
        .filter(key=KEY)
        .annotate(**annotations)
        .values_list("server", "epoch", *annotations)
        .first()
    )
    return row if row is not None else ()


def recheck_if_moved(recorded: tuple | object | None = _UNREAD) -> bool:
    """Check this process's Redis server again when another process moved the record; True if so.

    Run by every server process's applier thread (products.applier). A
    process that adopted another server meanwhile (an operator's shell or
    import with another REDIS_URL, a proxy or Sentinel switching one
    process first) sent its invalidations there, and this process's
    open connections would go on serving what they replaced. Checking again
    bumps the epoch back (a switch), which retires every bucket marked before.
    ``recorded``: (server, epoch) as :func:`read_watched_record` just read
    it, or None when it found no row.
    """
    global _adopted
    adopted = _adopted
    if adopted is None:
        return False
    found = _recorded(router.db_for_write(CacheServer)) if recorded is _UNREAD else recorded
    if found is not None and tuple(found) == adopted:
        return False
    _adopted = None
    if found is None:
        # The record this process wrote is gone (a deleted row, a database
        # restored from before): check again, which writes a new one with an
        # epoch never handed out before, and retires every bucket marked before.
        logger.warning(
            "The product cache's server record is missing; checking this process's Redis server again"
        )
    else:
        _report_recheck(*found)
    # The near cache's tracked connection goes too: on Sentinel it may still
    # be on a master the sentinels have left, proving stale entries with PINGs.
    nearcache.reset()
    transport.check_servers_again()
    return True


def reset() -> None:
    """Forget the server this process adopted, and the re-checks it reported (tests)."""
    global _adopted, _warned_at, _rechecks_unreported
    _adopted = None
    _warned_at, _rechecks_unreported = None, 0
    _recorded_by_others.clear()


def recheck_after_a_write() -> None:
    """After a write's invalidation reached Redis: re-check, in a process that no applier polls for.

    A shell or an import on another Redis invalidates there; its first write
    moves the record, but its later ones would not (it stays on its server).
    Run outside transactions only (an adoption cannot be recorded inside one).
    """
    if polled_in_pid == os.getpid() or _adopted is None:
        return
    using = router.db_for_write(CacheServer)
    if cache.in_transaction(using):
        return
    try:
        recheck_if_moved()
    except DatabaseError as exc:  # the write is done; the serving processes still poll
        logger.warning(
            "Could not compare with the recorded Redis server (%s: %s)", type(exc).__name__, first_line(exc)
        )


def _report_recheck(server: str, epoch: int) -> None:
    # Two deployments on one database with different Redis settings (another
    # REDIS_URL, database number or CACHE_KEY_PREFIX) move the record back and
    # forth: each check retires the other's buckets, so no read is stale, but
    # nothing stays cached. Say so once a minute, not every poll. A server not
    # met lately (a restart or a failover: a new run_id each time, however
    # often) is only news.
    global _warned_at, _rechecks_unreported
    now = time.monotonic()
    for seen, at in list(_recorded_by_others.items()):
        if now - at >= WARN_EVERY:
            del _recorded_by_others[seen]
    once = server not in _recorded_by_others
    _recorded_by_others[server] = now
    if once:
        # The usual cause: Redis restarted or failed over, and another process met it first.
        logger.info(
            "Another process recorded another Redis server or epoch for the product cache (%s, epoch %s): "
            "a restart, a failover, or a process with other Redis settings; checking this process's server again",
            server,
            epoch,
        )
        return
    if _warned_at is not None and now - _warned_at < WARN_EVERY:
        _rechecks_unreported += 1
        logger.debug("Re-checking this process's Redis server (the record names %s, epoch %s)", server, epoch)
        return
    again = f" ({_rechecks_unreported} more time(s) in the last minute)" if _rechecks_unreported else ""
    _warned_at, _rechecks_unreported = now, 0
    logger.warning(
        "Another process recorded another Redis server for the product cache (%s, epoch %s); "
        "checking this process's server again, which retires what this cache held%s. Processes "
        "sharing this database must share REDIS_URL (or the Sentinels or Cluster) and CACHE_KEY_PREFIX.",
        server,
        epoch,
        again,
    )


def _recorded(using: str) -> tuple[str, int] | None:
    """Return the (server, epoch) the ledger records, or None before any adoption."""
    return CacheServer.objects.using(using).filter(key=KEY).values_list("server", "epoch").first()


def _untrusted(run_id: str) -> str:
    return f"{run_id}:unrecorded-{secrets.token_hex(8)}"


def _clock_epoch() -> int:
    # Microseconds: a switch (a database transaction) takes far longer.
    return time.time_ns() // 1000


def _switch(using: str, server: str) -> int:
    """Record ``server`` as the one adopted last, bumping the epoch if it was another; return the epoch."""
    with _short_lock_wait(using), transaction.atomic(using=using):
        if connections[using].vendor == "postgresql":
            with connections[using].cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'")
        ledger, created = (
            CacheServer.objects.using(using)
            .select_for_update()
            # A new record starts from the clock (microseconds), not from 1,
            # and a switch never goes below it: a record deleted, or restored
            # from a backup, must not hand out an epoch that buckets still
            # carry (their values would count again).
            .get_or_create(key=KEY, defaults={"server": server, "epoch": _clock_epoch()})
        )
        if not created and ledger.server != server:
            ledger.server, ledger.epoch = server, max(ledger.epoch + 1, _clock_epoch())
            ledger.save(using=using, update_fields=["server", "epoch"])
    return ledger.epoch


@contextmanager
def _short_lock_wait(using: str):
    # SQLite takes its write lock at BEGIN (IMMEDIATE): wait for it briefly,
    # not SQLITE_BUSY_TIMEOUT; the connection's own wait comes back after.
    connection = connections[using]
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        before = cursor.fetchone()[0]
        cursor.execute(f"PRAGMA busy_timeout = {LOCK_WAIT_MS}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {int(before)}")
