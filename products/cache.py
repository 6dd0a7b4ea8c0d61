"""Product cache policy: keys, read-through with leases, invalidation, generations.

This is the only module that decides what Redis holds about products. Views,
admin, querysets and commands call :func:`get_product`, :func:`invalidate` and
:func:`invalidate_on_commit`; nobody else builds a product key. The Redis
connection, the Lua scripts (``products/lua/*.lua``) and the circuit breaker
live in :mod:`products.transport`; ETags in :mod:`products.conditional`;
throttle counters in :mod:`products.counters`. This module imports nothing
from the domain: callers pass the loader that reads the database.

Key layout (every key also carries the cache's ``KEY_PREFIX`` and version)::

    products:v1:gen               the current generation, a random token
    products:v1:<gen>:p:<name>    the product's JSON bytes (plain data, never pickles)
    products:v1:<gen>:l:<name>    the fill lease for that product

Guarantees, and how they hold:

* **No stale fill.** A miss takes a *lease* (a random token, ``SET NX PX``)
  before it reads the database; only the lease holder may fill, and the fill
  is a Lua script that stores the value only while that very lease still
  exists. Invalidation deletes the value *and* the lease, so a reader that
  read the old row before a write committed can no longer store it
  (Facebook's memcache leases, NSDI 2013).
* **Stampede control.** Readers that miss while someone else holds the lease
  poll the key for a bounded time (``PRODUCT_CACHE_LEASE_WAIT``), then read the
  database themselves without filling; a dead filler costs a short wait, never
  an error.
* **Invalidation after commit.** Writers call :func:`invalidate_on_commit`,
  which invalidates at once and again after the commit (the second delete is
  the one that counts: until the commit, other readers may re-fill the old
  row). A read inside a transaction goes to the database and stores nothing,
  so uncommitted rows never reach the cache.
* **Redis down, refusing or hanging.** Every call has a short socket timeout
  and no retries; a failure opens a per-process circuit breaker
  (:mod:`products.transport`) and requests go straight to the database.
* **Writes during an outage.** They cannot delete the old value. The process
  that missed an invalidation remembers it and, as soon as Redis answers again
  (a background probe retries every few hundred ms), *retires the generation*:
  every product key is built from ``gen``, so a new random generation makes all
  older values unreachable, including those of a Redis restarted from old data.
* ``PRODUCT_CACHE_ENABLED`` off: every product read comes from the database
  (throttling still counts in Redis).

Caveats, stated plainly:

* Between Redis coming back and the probe retiring the generation (at most
  one probe interval, ~0.25 s), another process that never saw the outage
  could serve a value replaced during it; the 60 s timeout bounds that too.
* Lua scripts build keys from the generation at run time, which suits one
  Redis (or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from django.conf import settings
from django.db import transaction

from . import transport
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
    "retire_generation",
    "retire_generation_on_commit",
    "status",
    "warm_products",
]

logger = logging.getLogger(__name__)

KEY_VERSION = "products:v1"  # bump when the cached shape changes

# What the read scripts answer first.
_THROTTLED = 0
_HIT = 1
_LEASE = 2
_WAIT = 3

Loader = Callable[[str], bytes | None]  # reads one product's JSON from the database


class CachedProduct(NamedTuple):
    data: bytes  # the product's JSON representation
    hit: bool  # True when Redis served it

    @property
    def etag(self) -> str:
        return make_etag(self.data)


# Called between the database read and the cache fill; tests use it to force
# the slow-reader race deterministically.
after_database_read: Callable[[str], None] | None = None


# --- Keys and generations -----------------------------------------------------


def _key(suffix: str) -> str:
    return transport.make_key(f"{KEY_VERSION}:{suffix}")


def _gen_key() -> str:
    return _key("gen")


def _base() -> str:
    return _key("")


def _retire_generation(client: Client) -> None:
    client.set(_gen_key(), secrets.token_hex(8))
    logger.warning("Product cache generation retired; older cached products are unreachable")


# A process that missed an invalidation retires the generation before it
# sends Redis anything else (see products.transport).
transport.register_resync(_retire_generation)


# --- Reads ----------------------------------------------------------------------


def cache_enabled() -> bool:
    """Return False when PRODUCT_CACHE_ENABLED is off (product reads skip Redis)."""
    return getattr(settings, "PRODUCT_CACHE_ENABLED", True)


def _in_transaction() -> bool:
    """Return True inside an atomic block (other than a test case's wrapper)."""
    # A read inside a transaction must see that transaction's own writes, and
    # must never store them: they are uncommitted and may roll back. Django
    # marks the blocks TestCase opens around each test with _from_testcase;
    # those are not the application's transactions.
    return any(
        not getattr(block, "_from_testcase", False) for block in transaction.get_connection().atomic_blocks
    )


def _from_database(name: str, load: Loader) -> CachedProduct | None:
    data = load(name)
    return None if data is None else CachedProduct(data, hit=False)


def get_product(name: str, load: Loader) -> CachedProduct | None:
    """Return the product's JSON representation, from Redis when it is there.

    ``load`` reads the representation from the database (None when the product
    does not exist). Returns None for an unknown product. Never raises for a
    Redis failure.
    """
    if not cache_enabled() or _in_transaction():
        return _from_database(name, load)
    token = secrets.token_hex(8)
    keys, base = [_gen_key()], _base()
    args = [base, name, token, int(settings.PRODUCT_CACHE_LEASE_TIMEOUT * 1000)]
    deadline = time.monotonic() + settings.PRODUCT_CACHE_LEASE_WAIT
    delay = 0.002
    while True:
        try:
            kind, payload = transport.run(lambda c: transport.evalsha(c, "read", keys, args))
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
    trip (cache off, inside a transaction): the caller then counts on its own.
    Redis failures fail open. :func:`products.counters.get_product_counted`
    is the caller.
    """
    if not cache_enabled() or _in_transaction():
        return None
    token = secrets.token_hex(8)
    lease_ms = int(settings.PRODUCT_CACHE_LEASE_TIMEOUT * 1000)
    keys = [_gen_key(), counter_key]
    args = [_base(), name, token, lease_ms, counter_ttl, -1 if limit is None else limit]
    try:
        kind, payload = transport.run(lambda c: transport.evalsha(c, "count_and_read", keys, args))
    except CacheUnavailable:
        return _from_database(name, load), True
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
    try:
        data = load(name)
        if after_database_read is not None:
            after_database_read(name)
    except BaseException:
        _release(name, token, gen)
        raise
    if data is None:
        _release(name, token, gen)
        return None
    fill_args = [_base(), name, token, gen, data, settings.PRODUCT_CACHE_TIMEOUT]
    try:
        transport.run(lambda c: transport.evalsha(c, "fill", [_gen_key()], fill_args))
    except CacheUnavailable:
        pass
    return CachedProduct(data, hit=False)


def _release(name: str, token: str, gen: bytes) -> None:
    try:
        transport.run(lambda c: transport.evalsha(c, "release", [_gen_key()], [_base(), token, gen, name]))
    except CacheUnavailable:
        pass


# --- Invalidation -------------------------------------------------------------------


def invalidate(names: Iterable[str]) -> None:
    """Forget the cached products (and revoke their fill leases) now."""
    names = [n for n in set(names) if n]
    if not names:
        return
    try:
        for start in range(0, len(names), 1000):
            chunk = names[start : start + 1000]
            transport.run(
                lambda c, chunk=chunk: transport.evalsha(c, "invalidate", [_gen_key()], [_base(), *chunk])
            )
    except CacheUnavailable:
        transport.need_resync()
        logger.info("Could not invalidate %d product(s); generation will be retired", len(names))


def invalidate_on_commit(names: Iterable[str], using: str | None = None) -> None:
    """Invalidate ``names`` once the current transaction commits (now if none).

    Inside a transaction the names are also invalidated at once: code that
    reads back through the cache within the same transaction (a shell
    session, a test wrapped in a transaction) must not see the old value. The
    delete after commit is the one that protects everybody else, since a
    reader may re-fill the old row until the commit.
    """
    names = frozenset(names)
    if not names:
        return
    if transaction.get_connection(using).in_atomic_block:
        invalidate(names)
    # robust: another callback raising must not skip the invalidation.
    transaction.on_commit(lambda: invalidate(names), using=using, robust=True)


def retire_generation() -> None:
    """Make every cached product unreachable at once (one Redis command)."""
    try:
        transport.run(_retire_generation)
    except CacheUnavailable:
        transport.need_resync()


def retire_generation_on_commit(using: str | None = None) -> None:
    """Retire the generation once the current transaction commits (and now, as above)."""
    if transaction.get_connection(using).in_atomic_block:
        retire_generation()
    transaction.on_commit(retire_generation, using=using, robust=True)


# --- Warm-up, clear, info -----------------------------------------------------------


class WarmedBatch(NamedTuple):
    stored: int  # in the cache now: filled by this call, or already there
    skipped: int  # a reader holds the fill lease: it stores the value itself
    missing: list[str]  # no such product


def warm_products(names: Sequence[str], load_many: Callable[[list[str]], dict[str, bytes]]) -> WarmedBatch:
    """Fill the cache for ``names`` in two pipelined round trips.

    The leases are taken *before* ``load_many`` reads the database, exactly as
    in a read-through fill, so a write that commits during the warm-up revokes
    them and its old rows are never stored. Raises CacheUnavailable.
    """
    token = secrets.token_hex(8)
    lease_ms = int(settings.PRODUCT_CACHE_LEASE_TIMEOUT * 1000)
    timeout = settings.PRODUCT_CACHE_TIMEOUT
    gen_key, base = _gen_key(), _base()

    def take_leases(client: Client) -> list:
        read, pipe = transport.script(client, "read"), client.pipeline(transaction=False)
        for name in names:
            read(keys=[gen_key], args=[base, name, token, lease_ms], client=pipe)
        return pipe.execute()

    answers = transport.run(take_leases)
    already = sum(1 for kind, _ in answers if kind == _HIT)
    leases = {name: gen for name, (kind, gen) in zip(names, answers) if kind == _LEASE}
    found = load_many(list(leases)) if leases else {}

    def fill(client: Client) -> int:
        fill_script, release = transport.script(client, "fill"), transport.script(client, "release")
        pipe = client.pipeline(transaction=False)
        for name, gen in leases.items():
            if name in found:
                fill_script(keys=[gen_key], args=[base, name, token, gen, found[name], timeout], client=pipe)
            else:
                release(keys=[gen_key], args=[base, token, gen, name], client=pipe)
        return sum(1 for name, ok in zip(leases, pipe.execute()) if name in found and ok)

    filled = transport.run(fill) if leases else 0
    missing = [name for name in leases if name not in found]
    return WarmedBatch(already + filled, len(names) - already - filled - len(missing), missing)


def scan_pattern(suffix: str = "") -> str:
    """Return a SCAN MATCH pattern for this service's keys that start with ``suffix``."""
    # KEY_PREFIX could hold glob characters; escape them for SCAN MATCH.
    prefix = _key(suffix)
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + "*"


def clear() -> int:
    """Delete every key of this service's product cache: products, leases, the
    generation and the throttle counters. Other keys (other prefixes) are
    untouched; never FLUSHDB."""

    def op(client: Client) -> int:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=scan_pattern(), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += client.unlink(*batch)
        return deleted

    return transport.run(op)


def info() -> dict[str, object]:
    """Return how many products are cached now, and Redis memory figures."""

    def op(client: Client) -> dict[str, object]:
        gen = client.get(_gen_key()) or b"(none yet)"
        pattern = scan_pattern(gen.decode() + ":p:")
        cached = sum(1 for _ in client.scan_iter(match=pattern, count=1000))
        memory = client.info("memory")
        return {
            "cached_products": cached,
            "generation": gen.decode(),
            "used_memory": memory.get("used_memory"),
            "used_memory_human": memory.get("used_memory_human"),
        }

    return transport.run(op)
