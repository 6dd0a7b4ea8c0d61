"""Product cache policy: read-through with leases, invalidation, generations, outages.

The only module that decides what Redis holds about products: views, admin,
querysets and commands call :func:`get_product`, :func:`invalidate` and
:func:`invalidate_on_commit`. Beneath it, :mod:`products.cachekeys` (buckets
with hash tags: one key scheme for one Redis, Sentinel and Redis Cluster),
:mod:`products.scripts` (``lua/*.lua``) and :mod:`products.transport`
(connection, breaker; :mod:`products.serveridentity`: server identity). It imports nothing from the domain:
callers pass the loader that reads the database.

Guarantees, and how they hold:

* **No stale fill.** A miss takes a *lease* before it reads the database;
  the fill stores the value only while that very lease still exists, and
  invalidation deletes the value *and* the lease (memcache leases, NSDI 2013).
* **Stampede control.** Readers that miss while another holds the lease wait
  for its fill at most ``PRODUCT_CACHE_LEASE_WAIT``, then read the database.
  A name with no product is filled too, with an empty value (``ABSENT``), so
  a burst of reads of an unknown name costs one query as well; every write
  that makes a name exist (a create, a rename, an import) invalidates it
  like any other write.
* **Invalidation after commit.** :func:`invalidate_on_commit` deletes at once
  and again after the commit (the one that counts). Reads inside a
  transaction go to the database and store nothing.
* **Redis down, refusing or hanging.** Short socket timeouts, no retries, a
  per-process circuit breaker; reads go to the database. An open breaker
  never skips an invalidation: the write still tries Redis after its commit
  (one timeout), having recorded the miss with the write instead of trying
  inside the transaction too.
* **Missed invalidations** (:mod:`products.missed`) go to its hooks
  (``missed.add_hook``: products.outbox records them in the writer's
  transaction) and stay pending in this
  process, whose probe delivers them (the names, or every bucket past
  ``missed.INVALIDATE_BY_NAME_LIMIT``) within about 0.1 s of Redis answering again.
* **A different Redis is never trusted.** A new connection first reads the
  server's ``run_id``; on a server this process has not checked (a restart,
  a failover, or a process just started) every bucket another run_id set
  gets a fresh generation before the connection serves anything. A restart
  breaks every pooled connection, so every worker checks. On one Redis or
  Sentinel, a server the cache left and came back to is caught as well:
  the buckets' mark carries the epoch of the last switch of server, kept in
  the database (products.serverledger).

Caveats, stated plainly:

* A hung Redis that resumes is the same server: a value replaced while it
  hung stays readable by processes that did not see the outage until the
  writer's probe (or the outbox) deletes it (figures in docs/cache.md).
* A cluster connection already open to a replica that is then promoted is
  not re-checked (the cache reads masters only).
* A ``KEY_PREFIX`` holding ``{...}`` puts every key in one slot: still
  correct, no longer spread over the masters.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from django.conf import settings
from django.db import transaction

from . import cachekeys, metrics, missed, scripts, transport
from .cachekeys import clear, info
from .conditional import make_etag
from .transport import CacheUnavailable, Client, status

__all__ = [
    "ABSENT",
    "CacheUnavailable",
    "CachedProduct",
    "Loader",
    "WarmedBatch",
    "adopt_server",
    "cache_enabled",
    "clear",
    "count_and_read",
    "get_product",
    "in_transaction",
    "info",
    "invalidate",
    "invalidate_on_commit",
    "register_after_delivery",
    "reset",
    "retire_generation",
    "retire_generation_on_commit",
    "status",
    "status_for_bulk",
    "warm_products",
]

logger = logging.getLogger(__name__)

# What the read scripts answer first.
_THROTTLED, _HIT, _LEASE, _WAIT = 0, 1, 2, 3

Loader = Callable[[str], bytes | None]  # reads one product's JSON from the database
Reader = Callable[[Client, list, list], Any]  # runs lua/read.lua: (client, keys, args) -> reply


def _lease_ms() -> int:
    """Return how long a fill lease lasts, in milliseconds (the scripts' PX)."""
    return int(settings.PRODUCT_CACHE_LEASE_TIMEOUT * 1000)


def _lease_value(gen: bytes, token: str) -> bytes:
    """Return a lease's stored value, as lua/read.lua writes it: "<gen>:<token>"."""
    return gen + b":" + token.encode()


# A fill's identity, not a secret: it must differ between the readers of one
# name within a lease's lifetime. A generator of this module's own, seeded
# from os.urandom at import and again in every forked child, so no
# random.seed() elsewhere can make two processes draw the same tokens;
# secrets.token_hex would cost a getrandom system call per miss.
_tokens = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_tokens.seed)


def _lease_token() -> str:
    return f"{_tokens.getrandbits(64):016x}"


# Called between the database read and the cache fill; tests use it to force
# the slow-reader race deterministically.
after_database_read: Callable[[str], None] | None = None


# What the cache stores for a name no product has: no product's JSON is empty.
ABSENT = b""


class CachedProduct(NamedTuple):
    data: bytes  # the product's JSON representation
    hit: bool  # True when Redis served it

    @property
    def etag(self) -> str:
        return make_etag(self.data)


# --- Reads ----------------------------------------------------------------------


def cache_enabled() -> bool:
    """Return False when PRODUCT_CACHE_ENABLED is off (product reads skip Redis)."""
    return settings.PRODUCT_CACHE_ENABLED


def adopt_server() -> None:
    """Meet the Redis server now, before the caller opens a transaction (an import).

    The first Redis command of a process adopts the server, which is recorded
    in the database (products.serverledger). Inside a transaction that is not
    possible: the import's invalidation would be recorded as missed (the
    first import after a Redis restart), or a ledger row another process
    moved would fail it.
    """
    if cache_enabled():
        status()


def status_for_bulk() -> str:
    """:func:`status`, waiting out a busy Redis as the bulk commands do (transport.BULK_PATIENCE)."""
    return status(patience=transport.BULK_PATIENCE)


def in_transaction(using: str | None = None) -> bool:
    """Return True inside an atomic block (other than a test case's wrapper)."""
    # A read inside a transaction must see that transaction's own writes, and
    # must never store them: they are uncommitted and may roll back. Django
    # marks the blocks TestCase opens around each test with _from_testcase.
    connection = transaction.get_connection(using)
    return connection.in_atomic_block and any(
        not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks
    )


def _from_database(name: str, load: Loader, result: str = "bypass") -> CachedProduct | None:
    """Read the product from the database without filling; count the lookup as ``result``."""
    metrics.cache_lookup(result)
    data = load(name)
    return None if data is None else CachedProduct(data, hit=False)


def _pooled_read(client: Client, keys: list, args: list):
    return scripts.evalsha(client, "read", keys, args)


def get_product(name: str, load: Loader, *, reader: Reader | None = None) -> CachedProduct | None:
    """Return the product's JSON representation, from Redis when it is there.

    ``load`` reads the representation from the database (None when the product
    does not exist). ``reader`` runs the read script (products.nearcache's
    runs it on its tracked connection); by default a pooled connection does.
    Returns None for an unknown product. Never raises for a Redis failure.
    """
    read = reader or _pooled_read
    if not cache_enabled() or in_transaction():
        return _from_database(name, load)
    token, keys = _lease_token(), list(cachekeys.product_keys(name))
    args = [token, _lease_ms()]
    deadline = time.monotonic() + settings.PRODUCT_CACHE_LEASE_WAIT
    delay = 0.002
    waited = False
    while True:
        try:
            kind, payload = transport.run(lambda c: read(c, keys, args))
        except CacheUnavailable:
            return _from_database(name, load)
        if kind == _HIT:
            metrics.cache_lookup("hit")
            return CachedProduct(payload, hit=True) if payload != ABSENT else None
        if kind == _LEASE:
            return _fill(name, keys, token, payload, load)
        # Someone else holds the lease and is reading the database: wait for
        # their value, but never for long.
        if not waited:
            waited = True
            metrics.lease_wait()
        if time.monotonic() + delay > deadline:
            return _from_database(name, load, "miss")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def count_and_read(
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
    if not cache_enabled() or in_transaction():
        return None
    token, keys = _lease_token(), [*cachekeys.product_keys(name), counter_key]
    lease_ms = _lease_ms()
    args = [token, lease_ms, counter_ttl, -1 if limit is None else limit]

    def in_one_script(client: Client):
        if transport.is_cluster(client):
            return None
        return scripts.evalsha(client, "count+read", keys, args)

    try:
        answer = transport.run(in_one_script)
    except CacheUnavailable:
        return _from_database(name, load), True
    if answer is None:
        return None
    transport.wrote()  # the script counted (a write) before anything else
    kind, payload = answer
    if kind == _THROTTLED:
        return None, False
    if kind == _HIT:
        metrics.cache_lookup("hit")
        return (CachedProduct(payload, hit=True) if payload != ABSENT else None), True
    if kind == _LEASE:
        return _fill(name, keys[:3], token, payload, load), True
    # Another reader holds the lease: get_product() waits for its fill
    # (bounded), without counting the request again.
    return get_product(name, load), True


def _fill(name: str, keys: list, token: str, gen: bytes, load: Loader) -> CachedProduct | None:
    """Read the database as the lease holder; store the row only while the lease lives."""
    transport.wrote()  # the lease was written: a Redis that was full takes writes again
    metrics.cache_lookup("miss")
    try:
        data = load(name)
        if after_database_read is not None:
            after_database_read(name)
    except BaseException:
        _release(keys, token, gen)
        raise
    args = [token, gen, ABSENT if data is None else data, settings.PRODUCT_CACHE_TIMEOUT]
    try:
        transport.run(lambda c: scripts.evalsha(c, "fill", keys, args))
    except CacheUnavailable:
        pass
    return None if data is None else CachedProduct(data, hit=False)


def _release(keys: list[str], token: str, gen: bytes) -> None:
    try:
        transport.run(lambda c: scripts.evalsha(c, "release", [keys[2]], [_lease_value(gen, token)]))
    except CacheUnavailable:
        pass


# --- Invalidation -------------------------------------------------------------------


def _settling() -> bool:
    """Return True when a write makes a second, settling round trip (while near caches may listen).

    Near caches (products.nearcache) hear of a change from a message Redis
    queues for them while it runs our command, and writes in the same turn
    of its event loop as our reply, possibly just after it. A second round
    trip comes back only after that turn: once it does, every message is on
    its way, before the write is acknowledged. On a cluster it goes to every
    master (cachekeys.settle).
    """
    return settings.PRODUCT_NEAR_CACHE


# Runs after an invalidation reached Redis (products.serverledger: is this
# still the server the others use? wired in apps.ready()).
_after_delivery: Callable[[], None] | None = None


def register_after_delivery(function: Callable[[], None]) -> None:
    global _after_delivery
    _after_delivery = function


def invalidate(names: Iterable[str], *, record_miss: bool = True) -> bool:
    """Forget the cached products (and revoke their fill leases) now.

    Tries Redis even while the breaker is open. Returns False when Redis could
    not be reached; the miss then goes to this process's resync and, unless
    ``record_miss`` is off, to the hooks of ``missed.add_hook``.
    """
    names = [n for n in set(names) if n]
    if not names:
        return True
    try:
        settling = _settling()
        transport.run(
            lambda c: cachekeys.delete_and_settle(c, names, settling), force=True, deletes_only=True
        )
    except CacheUnavailable as exc:
        # On a cluster, the masters that answered took their names.
        undelivered = exc.__cause__.names if isinstance(exc.__cause__, cachekeys.Undelivered) else names
        missed.missed(frozenset(undelivered), record_miss)
        return False
    if _after_delivery is not None:
        _after_delivery()
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
    recorded = transaction.get_connection(using).in_atomic_block and not _now_or_record(
        lambda: invalidate(names), names
    )
    # robust: another callback raising must not skip the invalidation.
    transaction.on_commit(lambda: invalidate(names, record_miss=not recorded), using=using, robust=True)


def _now_or_record(attempt: Callable[[], bool], names: frozenset[str] | None) -> bool:
    """Run a write's immediate attempt; while the breaker is open, record the miss instead.

    Redis failed moments ago: a second socket timeout now would only double
    the write's wait on a hung Redis. The miss is recorded with the write
    (the outbox) and kept for this process's probe; the attempt after commit
    still tries Redis, which is the one that counts. Returns False when the
    miss was recorded.
    """
    if transport.breaker_open():
        missed.missed(names)
        return False
    return attempt()


def retire_generation(*, record_miss: bool = True) -> bool:
    """Make every cached product unreachable at once (one pipelined round trip).

    Returns False when Redis could not be reached (the miss is kept and
    recorded as in :func:`invalidate`).
    """
    try:
        settling = _settling()

        def retire(client: Client) -> None:
            cachekeys.retire_all(client)
            if settling:
                cachekeys.settle(client, None)

        transport.run(retire, force=True, deletes_only=True)
    except CacheUnavailable:
        missed.missed(None, record_miss)
        return False
    return True


def retire_generation_on_commit(using: str | None = None) -> None:
    """Retire the generation once the current transaction commits (and now, as above)."""
    recorded = transaction.get_connection(using).in_atomic_block and not _now_or_record(
        retire_generation, None
    )
    transaction.on_commit(lambda: retire_generation(record_miss=not recorded), using=using, robust=True)


def reset() -> None:
    """Forget this process's outages, missed invalidations and checked servers (for tests)."""
    missed.pending.clear()
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
    token, lease_ms = _lease_token(), _lease_ms()
    keys = {name: list(cachekeys.product_keys(name)) for name in names}
    reads = [(keys[name], [token, lease_ms]) for name in names]
    answers = transport.run(lambda c: scripts.eval_many(c, "read", reads), patience=transport.BULK_PATIENCE)
    already = sum(1 for kind, _ in answers if kind == _HIT)
    leases = {name: gen for name, (kind, gen) in zip(names, answers) if kind == _LEASE}
    found = load_many(list(leases)) if leases else {}
    timeout = settings.PRODUCT_CACHE_TIMEOUT
    fills = [(keys[n], [token, gen, found[n], timeout]) for n, gen in leases.items() if n in found]
    releases = [([keys[n][2]], [_lease_value(gen, token)]) for n, gen in leases.items() if n not in found]

    def fill(client: Client) -> int:
        if releases:
            scripts.eval_many(client, "release", releases)
        return sum(1 for ok in scripts.eval_many(client, "fill", fills) if ok) if fills else 0

    filled = transport.run(fill, patience=transport.BULK_PATIENCE) if leases else 0
    missing = [name for name in leases if name not in found]
    return WarmedBatch(already + filled, len(names) - already - filled - len(missing), missing)
