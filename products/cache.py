"""Product cache policy: read-through with leases, invalidation, generations, outages.

This is the only module that decides what Redis holds about products. Views,
admin, querysets and commands call :func:`get_product`, :func:`invalidate` and
:func:`invalidate_on_commit`; nobody else builds a product key. Beneath it:
:mod:`products.cachekeys` (the key scheme: buckets with hash tags, one scheme
for one Redis, Sentinel and Redis Cluster) and :mod:`products.transport`
(connection, ``lua/*.lua`` scripts, circuit breaker, server identity). ETags
are in :mod:`products.conditional`, throttle counters in
:mod:`products.counters`. This module imports nothing from the domain:
callers pass the loader that reads the database.

Guarantees, and how they hold:

* **No stale fill.** A miss takes a *lease* (a random token, ``SET PX``)
  before it reads the database; only the lease holder may fill, and the fill
  is a script that stores the value only while that very lease still exists.
  Invalidation deletes the value *and* the lease, so a reader that read the
  old row before a write committed can no longer store it (Facebook's
  memcache leases, NSDI 2013).
* **Stampede control.** Readers that miss while someone else holds the lease
  poll for a bounded time (``PRODUCT_CACHE_LEASE_WAIT``), then read the
  database themselves without filling.
* **Invalidation after commit.** Writers call :func:`invalidate_on_commit`,
  which invalidates at once and again after the commit (the second delete is
  the one that counts). A read inside a transaction goes to the database and
  stores nothing, so uncommitted rows never reach the cache.
* **Redis down, refusing or hanging.** Every call has a short socket timeout
  and no retries; a failure opens a per-process circuit breaker and reads go
  to the database. An open breaker never skips an invalidation: the write
  still tries Redis (one socket timeout at most).
* **Missed invalidations.** An invalidation Redis did not take goes to
  ``missed_invalidation_hooks`` (products.outbox records it in the database,
  in the writer's transaction) and stays pending in this process, whose probe
  deletes those names (or retires every bucket, past ``_MISSED_NAMES_LIMIT``)
  within about 0.1 s of Redis answering again, past the breaker's back-off.
* **A different Redis is never trusted.** Every new connection first asks
  the server for its ``run_id``. On a server instance this process has not
  checked (restarted, from a snapshot or not; a Sentinel or cluster
  failover; or this process just started), every bucket whose ``srv`` names
  another run_id gets a fresh generation before the connection serves
  anything (:func:`products.cachekeys.adopt`). A restart breaks every pooled
  connection, so every worker checks, whether it saw the outage or not.

Caveats, stated plainly:

* A hung Redis that resumes (SIGSTOP/SIGCONT) is the same server: a value
  replaced while it hung stays readable by other processes until the
  writer's probe (or the outbox applier) deletes it, about 0.1-0.2 s after
  Redis resumes.
* On a cluster, a connection a process already holds to a replica that is
  then promoted is not re-checked (by default it connects to masters only).
* A ``KEY_PREFIX`` holding ``{...}`` puts every key in one slot: still
  correct, no longer spread over the masters.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from django.conf import settings
from django.db import transaction

from . import cachekeys, transport
from .cachekeys import clear, info
from .conditional import make_etag
from .transport import CacheUnavailable, Client, status

__all__ = [
    "CacheUnavailable",
    "CachedProduct",
    "Loader",
    "WarmedBatch",
    "cache_enabled",
    "clear",
    "get_product",
    "info",
    "invalidate",
    "invalidate_on_commit",
    "missed_invalidation_hooks",
    "reset",
    "retire_generation",
    "retire_generation_on_commit",
    "status",
    "warm_products",
]

logger = logging.getLogger(__name__)

_MISSED_NAMES_LIMIT = 1000  # past this, a resync retires every bucket instead

# What the read scripts answer first.
_THROTTLED, _HIT, _LEASE, _WAIT = 0, 1, 2, 3

Loader = Callable[[str], bytes | None]  # reads one product's JSON from the database
Reader = Callable[[Client, list, list], Any]  # runs lua/read.lua: (client, keys, args) -> reply

# Called with the names an invalidation could not deliver (None: every
# product); products.outbox records them in the database. Wired in apps.ready().
missed_invalidation_hooks: list[Callable[[frozenset[str] | None], None]] = []

# Called between the database read and the cache fill; tests use it to force
# the slow-reader race deterministically.
after_database_read: Callable[[str], None] | None = None


class CachedProduct(NamedTuple):
    data: bytes  # the product's JSON representation
    hit: bool  # True when Redis served it

    @property
    def etag(self) -> str:
        return make_etag(self.data)


# --- Resync: missed invalidations and new servers --------------------------------------

_missed_lock = threading.Lock()
_missed_names: set[str] = set()
_missed_all = False
_missed_count = 0  # misses so far: a resync clears only what it delivered


def _missed(names: frozenset[str] | None, record: bool) -> None:
    """Keep a miss for this process's resync, and hand it to the hooks (the outbox)."""
    global _missed_all, _missed_count
    with _missed_lock:
        _missed_count += 1
        if names is None or len(_missed_names) + len(names) > _MISSED_NAMES_LIMIT:
            _missed_all = True
            _missed_names.clear()
        elif not _missed_all:
            _missed_names.update(names)
    transport.need_resync()
    logger.info(
        "Could not invalidate %s product(s) now; retrying when Redis answers", len(names or ()) or "all"
    )
    if record:
        for hook in missed_invalidation_hooks:
            hook(names)


def _resync(client: Client) -> None:
    """Deliver the invalidations this process missed (transport runs it before anything else)."""
    global _missed_all
    with _missed_lock:
        retire, names, count = _missed_all, list(_missed_names), _missed_count
    if retire:
        cachekeys.retire_all(client)
    elif names:
        cachekeys.delete(client, names)
    with _missed_lock:  # a failure above leaves them pending; a newer miss has its own resync
        if _missed_count == count:
            _missed_all = False
            _missed_names.clear()


transport.register_resync(_resync)
transport.register_adopt(cachekeys.adopt)


# --- Reads ----------------------------------------------------------------------


def cache_enabled() -> bool:
    """Return False when PRODUCT_CACHE_ENABLED is off (product reads skip Redis)."""
    return getattr(settings, "PRODUCT_CACHE_ENABLED", True)


def _in_transaction() -> bool:
    """Return True inside an atomic block (other than a test case's wrapper)."""
    # A read inside a transaction must see that transaction's own writes, and
    # must never store them: they are uncommitted and may roll back. Django
    # marks the blocks TestCase opens around each test with _from_testcase.
    return any(
        not getattr(block, "_from_testcase", False) for block in transaction.get_connection().atomic_blocks
    )


def _from_database(name: str, load: Loader) -> CachedProduct | None:
    data = load(name)
    return None if data is None else CachedProduct(data, hit=False)


def _pooled_read(client: Client, keys: list, args: list):
    return transport.evalsha(client, "read", keys, args)


def get_product(name: str, load: Loader, *, reader: Reader | None = None) -> CachedProduct | None:
    """Return the product's JSON representation, from Redis when it is there.

    ``load`` reads the representation from the database (None when the product
    does not exist). ``reader`` runs the read script (products.nearcache's
    runs it on its tracked connection); by default a pooled connection does.
    Returns None for an unknown product. Never raises for a Redis failure.
    """
    read = reader or _pooled_read
    if not cache_enabled() or _in_transaction():
        return _from_database(name, load)
    token, keys = secrets.token_hex(8), list(cachekeys.product_keys(name))
    args = [token, int(settings.PRODUCT_CACHE_LEASE_TIMEOUT * 1000)]
    deadline = time.monotonic() + settings.PRODUCT_CACHE_LEASE_WAIT
    delay = 0.002
    while True:
        try:
            kind, payload = transport.run(lambda c: read(c, keys, args))
        except CacheUnavailable:
            return _from_database(name, load)
        if kind == _HIT:
            return CachedProduct(payload, hit=True)
        if kind == _LEASE:
            return _fill(name, token, payload, load)
        # Someone else holds the lease and is reading the database: wait for
        # their value, but never for long.
        if time.monotonic() + delay > deadline:
            return _from_database(name, load)
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def get_product_counted(
    name: str, load: Loader, *, counter_key: str, counter_ttl: int, limit: int | None
) -> tuple[CachedProduct | None, bool] | None:
    """Count one request against ``counter_key`` and read the product, in one round trip.

    Returns ``(None, False)`` when the request is over ``limit`` (nothing read),
    else ``(product, True)``; None when the count cannot share the read's round
    trip, and the caller (:func:`products.counters.get_product_counted`)
    counts on its own: cache off, inside a transaction, or a Redis Cluster,
    where the counter and the product live in different slots. On one server
    the slots do not matter, and the same keys serve both.
    """
    if not cache_enabled() or _in_transaction():
        return None
    token, keys = secrets.token_hex(8), [*cachekeys.product_keys(name), counter_key]
    lease_ms = int(settings.PRODUCT_CACHE_LEASE_TIMEOUT * 1000)
    args = [token, lease_ms, counter_ttl, -1 if limit is None else limit]

    def count_and_read(client: Client):
        if transport.is_cluster(client):
            return None
        return transport.evalsha(client, "count+read", keys, args)

    try:
        answer = transport.run(count_and_read)
    except CacheUnavailable:
        return _from_database(name, load), True
    if answer is None:
        return None
    kind, payload = answer
    if kind == _THROTTLED:
        return None, False
    if kind == _HIT:
        return CachedProduct(payload, hit=True), True
    if kind == _LEASE:
        return _fill(name, token, payload, load), True
    # Another reader holds the lease: get_product() waits for its fill
    # (bounded), without counting the request again.
    return get_product(name, load), True


def _fill(name: str, token: str, gen: bytes, load: Loader) -> CachedProduct | None:
    """Read the database as the lease holder; store the row only while the lease lives."""
    keys = list(cachekeys.product_keys(name))
    try:
        data = load(name)
        if after_database_read is not None:
            after_database_read(name)
    except BaseException:
        _release(keys, token, gen)
        raise
    if data is None:
        _release(keys, token, gen)
        return None
    args = [token, gen, data, settings.PRODUCT_CACHE_TIMEOUT]
    try:
        transport.run(lambda c: transport.evalsha(c, "fill", keys, args))
    except CacheUnavailable:
        pass
    return CachedProduct(data, hit=False)


def _release(keys: list[str], token: str, gen: bytes) -> None:
    try:
        transport.run(lambda c: transport.evalsha(c, "release", [keys[2]], [gen + b":" + token.encode()]))
    except CacheUnavailable:
        pass


# --- Invalidation -------------------------------------------------------------------


def _settle(client: Client) -> None:
    # Near caches (products.nearcache) hear of a change from a message Redis
    # queues for them while it runs our command, and writes in the same turn
    # of its event loop as our reply, possibly just after it. A second round
    # trip comes back only after that turn: once it does, every message is on
    # its way, before the write is acknowledged.
    if getattr(settings, "PRODUCT_NEAR_CACHE", True) and not transport.is_cluster(client):
        client.ping()


def invalidate(names: Iterable[str], *, record_miss: bool = True) -> bool:
    """Forget the cached products (and revoke their fill leases) now.

    Tries Redis even while the breaker is open. Returns False when Redis could
    not be reached; the miss then goes to this process's resync and, unless
    ``record_miss`` is off, to ``missed_invalidation_hooks``.
    """
    names = [n for n in set(names) if n]
    if not names:
        return True
    try:
        transport.run(lambda c: (cachekeys.delete(c, names), _settle(c)), force=True)
    except CacheUnavailable:
        _missed(frozenset(names), record_miss)
        return False
    return True


def invalidate_on_commit(names: Iterable[str], using: str | None = None) -> None:
    """Invalidate ``names`` once the current transaction commits (now if none).

    Inside a transaction the names are also invalidated at once: code that
    reads back through the cache within the same transaction must not see the
    old value. The delete after commit is the one that protects everybody
    else, since a reader may re-fill the old row until the commit.
    """
    names = frozenset(names)
    if not names:
        return
    # A miss of the immediate attempt is recorded inside the transaction, so
    # it commits with the write; the attempt after commit need not record it again.
    recorded = transaction.get_connection(using).in_atomic_block and not invalidate(names)
    # robust: another callback raising must not skip the invalidation.
    transaction.on_commit(lambda: invalidate(names, record_miss=not recorded), using=using, robust=True)


def retire_generation(*, record_miss: bool = True) -> bool:
    """Make every cached product unreachable at once (one pipelined round trip).

    Returns False when Redis could not be reached (the miss is kept and
    recorded as in :func:`invalidate`).
    """
    try:
        transport.run(lambda c: (cachekeys.retire_all(c), _settle(c)), force=True)
    except CacheUnavailable:
        _missed(None, record_miss)
        return False
    return True


def retire_generation_on_commit(using: str | None = None) -> None:
    """Retire the generation once the current transaction commits (and now, as above)."""
    recorded = transaction.get_connection(using).in_atomic_block and not retire_generation()
    transaction.on_commit(lambda: retire_generation(record_miss=not recorded), using=using, robust=True)


def reset() -> None:
    """Forget this process's outages, missed invalidations and checked servers (for tests)."""
    global _missed_all
    with _missed_lock:
        _missed_all = False
        _missed_names.clear()
    transport.reset()


# --- Warm-up, clear, info -----------------------------------------------------------


class WarmedBatch(NamedTuple):
    stored: int  # in the cache now: filled by this call, or already there
    skipped: int  # a reader holds the fill lease: it stores the value itself
    missing: list[str]  # no such product


def warm_products(names: Sequence[str], load_many: Callable[[list[str]], dict[str, bytes]]) -> WarmedBatch:
    """Fill the cache for ``names`` in two pipelined round trips (per master).

    The leases are taken *before* ``load_many`` reads the database, exactly as
    in a read-through fill, so a write that commits during the warm-up revokes
    them and its old rows are never stored. Raises CacheUnavailable.
    """
    token, lease_ms = secrets.token_hex(8), int(settings.PRODUCT_CACHE_LEASE_TIMEOUT * 1000)
    keys = {name: list(cachekeys.product_keys(name)) for name in names}
    reads = [(keys[name], [token, lease_ms]) for name in names]
    answers = transport.run(lambda c: transport.eval_many(c, "read", reads))
    already = sum(1 for kind, _ in answers if kind == _HIT)
    leases = {name: gen for name, (kind, gen) in zip(names, answers) if kind == _LEASE}
    found = load_many(list(leases)) if leases else {}
    timeout = settings.PRODUCT_CACHE_TIMEOUT
    fills = [(keys[n], [token, gen, found[n], timeout]) for n, gen in leases.items() if n in found]
    releases = [([keys[n][2]], [gen + b":" + token.encode()]) for n, gen in leases.items() if n not in found]

    def fill(client: Client) -> int:
        if releases:
            transport.eval_many(client, "release", releases)
        return sum(1 for ok in transport.eval_many(client, "fill", fills) if ok) if fills else 0

    filled = transport.run(fill) if leases else 0
    missing = [name for name in leases if name not in found]
    return WarmedBatch(already + filled, len(names) - already - filled - len(missing), missing)
