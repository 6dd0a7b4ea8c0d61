"""All product cache policy: keys, read-through with leases, invalidation, outages.

This is the only module that talks to Redis about products. Views, admin,
querysets and commands call :func:`get_product`, :func:`invalidate` and
:func:`invalidate_on_commit`; nobody else builds a key.

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
  (``REDIS_SOCKET_TIMEOUT``, 100 ms) and no retries. A failure opens a per-process
  circuit breaker: for ``PRODUCT_CACHE_BACKOFF`` seconds the cache is skipped
  and requests go straight to the database. The outage is logged once when it
  starts and once when it ends.
* **Writes during an outage.** They cannot delete the old value. The process
  that missed an invalidation remembers it and, as soon as Redis answers again
  (a background probe retries every few hundred ms), *retires the generation*:
  every product key is built from ``gen``, so a new random generation makes all
  older values unreachable, including those of a Redis restarted from old data.

* **One round trip per cached hit** on the fast path (products.fastpath):
  :func:`get_product_counted` counts the request against the throttle window
  and reads the product in one Lua script.
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

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from django.conf import settings
from django.core.cache import caches
from django.db import transaction
from django.utils.http import parse_etags
from redis.exceptions import NoScriptError, RedisError

from . import metrics

logger = logging.getLogger(__name__)

KEY_VERSION = "products:v1"  # bump when the cached shape changes

_THROTTLED = 0
_HIT = 1
_LEASE = 2
_WAIT = 3

# Every script finds the current generation the same way. A missing key (a
# fresh or flushed Redis, an evicted key) gets a new unique token rather than
# a fixed default, so values stored under a retired generation can never
# become reachable again.
_CURRENT_GENERATION = """
local gen = redis.call('GET', KEYS[1])
if not gen then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[1], now[1] .. '.' .. now[2], 'NX')
  gen = redis.call('GET', KEYS[1])
end
"""

# The lease-guarded read: the value, else a fresh lease (the caller fills),
# else "someone else is filling" (the caller waits). ARGV = base, name,
# token, lease ms, ...
_READ_BODY = """
local v = redis.call('GET', ARGV[1] .. gen .. ':p:' .. ARGV[2])
if v then return {1, v} end
if redis.call('SET', ARGV[1] .. gen .. ':l:' .. ARGV[2], ARGV[3], 'NX', 'PX', ARGV[4]) then
  return {2, gen}
end
return {3, gen}
"""

# KEYS[1] = generation key; ARGV = base, name, token, lease ms.
_READ_LUA = _CURRENT_GENERATION + _READ_BODY

# KEYS[1] = generation key, KEYS[2] = throttle counter;
# ARGV = base, name, token, lease ms, counter ttl s, limit (-1: no limit).
# Counts first and stops there when over the limit, so a refused request
# neither reads nor takes a lease.
_COUNT_AND_READ_LUA = (
    """
local count = redis.call('INCR', KEYS[2])
if count == 1 then redis.call('EXPIRE', KEYS[2], ARGV[5]) end
local limit = tonumber(ARGV[6])
if limit >= 0 and count > limit then return {0, false} end
"""
    + _CURRENT_GENERATION
    + _READ_BODY
)

# KEYS[1] = generation key; ARGV = base, name, token, gen of the lease, value, ttl s.
_FILL_LUA = """
local gen = redis.call('GET', KEYS[1])
if gen ~= ARGV[4] then return 0 end
local lease = ARGV[1] .. gen .. ':l:' .. ARGV[2]
if redis.call('GET', lease) ~= ARGV[3] then return 0 end
redis.call('SET', ARGV[1] .. gen .. ':p:' .. ARGV[2], ARGV[5], 'EX', ARGV[6])
redis.call('DEL', lease)
return 1
"""

# KEYS[1] = generation key; ARGV = base, token, gen of the lease, name.
_RELEASE_LUA = """
local lease = ARGV[1] .. ARGV[3] .. ':l:' .. ARGV[4]
if redis.call('GET', lease) == ARGV[2] then redis.call('DEL', lease) end
return 0
"""

# KEYS[1] = generation key; ARGV = base, names... (no generation: nothing cached)
_INVALIDATE_LUA = """
local gen = redis.call('GET', KEYS[1])
if not gen then return 0 end
for i = 2, #ARGV do
  redis.call('DEL', ARGV[1] .. gen .. ':p:' .. ARGV[i], ARGV[1] .. gen .. ':l:' .. ARGV[i])
end
return #ARGV - 1
"""


class CacheUnavailable(Exception):
    """Redis did not answer in time, or the circuit breaker is open."""


class CachedProduct(NamedTuple):
    data: bytes  # the product's JSON representation
    hit: bool  # True when Redis served it

    @property
    def etag(self) -> str:
        return make_etag(self.data)


def make_etag(data: bytes) -> str:
    """Return a strong ETag for a product representation."""
    return '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'


def etag_matches(header: str | None, etag: str, *, weak: bool = True) -> bool:
    """Return True when an If-None-Match (weak) or If-Match (``weak=False``) header names ``etag``.

    ``*`` matches any existing product. If-Match compares strongly (RFC 9110):
    a ``W/`` tag never matches there.
    """
    if not header:
        return False
    tags = parse_etags(header)
    return "*" in tags or etag in tags or (weak and f"W/{etag}" in tags)


# --- Test hooks --------------------------------------------------------------
# Called between the database read and the cache fill; tests use it to force
# the slow-reader race deterministically.
after_database_read: Callable[[str], None] | None = None


# --- Connection, keys, scripts ----------------------------------------------


def _cache():
    return caches["default"]


def _client():
    return _cache().client.get_client(write=True)


def _key(suffix: str) -> str:
    return _cache().make_key(f"{KEY_VERSION}:{suffix}")


def _gen_key() -> str:
    return _key("gen")


def _base() -> str:
    return _key("")


_scripts: dict[tuple[int, str], object] = {}


def _script(client, source: str):
    # redis-py's Script runs EVALSHA and falls back to EVAL after a restart.
    key = (id(client.connection_pool), source)
    script = _scripts.get(key)
    if script is None:
        script = _scripts[key] = client.register_script(source)
    return script


def _evalsha(client, source: str, keys: list, args: list):
    """Run a script with one EVALSHA on a pooled connection.

    The same command redis-py's Script sends, without its per-call wrapping
    (about a tenth of a cached hit's CPU); a NOSCRIPT reply (Redis restarted or
    flushed its scripts) goes through Script, which loads it.
    """
    script = _script(client, source)
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        reply = connection.read_response()
    except NoScriptError:
        pool.release(connection)
        connection = None
        return script(keys=keys, args=args, client=client)
    except BaseException:
        connection.disconnect()
        raise
    finally:
        if connection is not None:
            pool.release(connection)
    return reply


# --- Circuit breaker -------------------------------------------------------------


class _Breaker:
    """Per-process circuit breaker in front of Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._down = False  # an outage is in progress (logged once)
        self._missed_invalidation = False
        self._probe: threading.Thread | None = None

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self, exc: BaseException) -> None:
        with self._lock:
            self._open_until = time.monotonic() + settings.PRODUCT_CACHE_BACKOFF
            first = not self._down
            self._down = True
        if first:
            metrics.breaker_state(True)
            logger.warning(
                "Redis unavailable (%s: %s); serving products from the database and retrying every %.1fs",
                type(exc).__name__,
                exc,
                settings.PRODUCT_CACHE_BACKOFF,
            )
        try:
            # Drop pooled sockets: after a restart they are all dead, and
            # each would otherwise fail once, re-opening the breaker.
            _client().connection_pool.disconnect()
        except Exception:  # pragma: no cover - best effort
            pass

    def succeeded(self) -> None:
        if self._down:
            with self._lock:
                was_down, self._down = self._down, False
            if was_down:
                metrics.breaker_state(False)
                logger.warning("Redis is answering again; product caching resumed")

    def miss_invalidation(self) -> None:
        """Remember that a write could not invalidate, and start the probe."""
        with self._lock:
            self._missed_invalidation = True
            if self._probe is None or not self._probe.is_alive():
                self._probe = threading.Thread(
                    target=_probe_until_resynced, name="product-cache-probe", daemon=True
                )
                self._probe.start()

    def take_missed_invalidation(self) -> bool:
        if not self._missed_invalidation:
            return False  # the usual case: no lock on every Redis call
        with self._lock:
            missed, self._missed_invalidation = self._missed_invalidation, False
            return missed


_breaker = _Breaker()


def _run(op: Callable[[object], object]) -> object:
    """Run one Redis operation under the breaker; raise CacheUnavailable."""
    if _breaker.is_open:
        raise CacheUnavailable("circuit open")
    try:
        client = _client()
        if _breaker.take_missed_invalidation():
            try:
                _retire_generation(client)
            except RedisError:
                _breaker.miss_invalidation()
                raise
        result = op(client)
    except RedisError as exc:
        _breaker.trip(exc)
        raise CacheUnavailable(str(exc)) from exc
    _breaker.succeeded()
    return result


def _retire_generation(client) -> None:
    client.set(_gen_key(), secrets.token_hex(8))
    metrics.generation_retired()
    logger.warning("Product cache generation retired; older cached products are unreachable")


def _probe_until_resynced() -> None:
    # A write that could not invalidate leaves a possibly stale value in
    # Redis; retire the generation the moment Redis answers, without waiting
    # for this process's next request.
    while True:
        time.sleep(0.25)
        try:
            _run(lambda client: client.ping())
            return
        except CacheUnavailable:
            continue
        except Exception:  # pragma: no cover - never let the probe die noisily
            logger.exception("Product cache probe failed")


# --- Public API --------------------------------------------------------------


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


def _default_loader() -> Callable[[str], bytes | None]:
    from .selectors import product_json

    return product_json


def _from_database(
    name: str, load: Callable[[str], bytes | None], result: str = "bypass"
) -> CachedProduct | None:
    """Read the product from the database without filling; count the lookup as ``result``."""
    metrics.cache_lookup(result)
    data = load(name)
    return None if data is None else CachedProduct(data, hit=False)


def get_product(name: str, load: Callable[[str], bytes | None] | None = None) -> CachedProduct | None:
    """Return the product's JSON representation, from Redis when it is there.

    ``load`` reads the representation from the database (None when the product
    does not exist); it defaults to :func:`products.selectors.product_json`.
    Returns None for an unknown product. Never raises for a Redis failure.
    """
    load = load or _default_loader()
    if not cache_enabled() or _in_transaction():
        return _from_database(name, load)
    token = secrets.token_hex(8)
    keys, base = [_gen_key()], _base()
    args = [base, name, token, int(settings.PRODUCT_CACHE_LEASE_TIMEOUT * 1000)]
    deadline = time.monotonic() + settings.PRODUCT_CACHE_LEASE_WAIT
    delay = 0.002
    waited = False
    while True:
        try:
            kind, payload = _run(lambda c: _evalsha(c, _READ_LUA, keys, args))
        except CacheUnavailable:
            return _from_database(name, load)
        if kind == _HIT:
            metrics.cache_lookup("hit")
            return CachedProduct(payload, hit=True)
        if kind == _LEASE:
            return _fill(name, token, payload, load, keys[0], base)
        # Someone else holds the lease and is reading the database: wait for
        # their value, but never for long.
        if not waited:
            waited = True
            metrics.lease_wait()
        if time.monotonic() + delay > deadline:
            return _from_database(name, load, "miss")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def get_product_counted(
    name: str,
    counter: str,
    window: int,
    limit: int | None,
    load: Callable[[str], bytes | None] | None = None,
) -> tuple[CachedProduct | None, bool]:
    """Count one request against ``counter`` and read the product, in one round trip.

    ``counter``/``window`` are what the throttle passes to rate_counter();
    ``limit`` is the most requests the window allows (None: count, never
    refuse). Returns ``(product, allowed)``: ``(None, False)`` when the request
    is over the limit (nothing read), else the product as get_product() would
    return it. Redis failures fail open, as rate_counter() and get_product() do.
    """
    load = load or _default_loader()
    if not cache_enabled() or _in_transaction():
        count = rate_counter(counter, window)
        if limit is not None and count is not None and count > limit:
            return None, False
        return _from_database(name, load), True
    token = secrets.token_hex(8)
    lease_ms = int(settings.PRODUCT_CACHE_LEASE_TIMEOUT * 1000)
    keys = [_gen_key(), throttle_key(counter, window)]
    args = [_base(), name, token, lease_ms, window + 1, -1 if limit is None else limit]
    try:
        kind, payload = _run(lambda c: _evalsha(c, _COUNT_AND_READ_LUA, keys, args))
    except CacheUnavailable:
        return _from_database(name, load), True
    if kind == _THROTTLED:
        return None, False
    if kind == _HIT:
        metrics.cache_lookup("hit")
        return CachedProduct(payload, hit=True), True
    if kind == _LEASE:
        return _fill(name, token, payload, load, keys[0], args[0]), True
    # Another reader holds the lease: get_product() waits for its fill
    # (bounded), without counting the request again.
    return get_product(name, load), True


def _fill(
    name: str, token: str, gen: bytes, load: Callable[[str], bytes | None], gen_key: str, base: str
) -> CachedProduct | None:
    """Read the database as the lease holder; store the row only while the lease lives."""
    metrics.cache_lookup("miss")
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
    fill_args = [base, name, token, gen, data, settings.PRODUCT_CACHE_TIMEOUT]
    try:
        _run(lambda c: _evalsha(c, _FILL_LUA, [gen_key], fill_args))
    except CacheUnavailable:
        pass
    return CachedProduct(data, hit=False)


def _release(name: str, token: str, gen: bytes) -> None:
    try:
        _run(lambda c: _evalsha(c, _RELEASE_LUA, [_gen_key()], [_base(), token, gen, name]))
    except CacheUnavailable:
        pass


def invalidate(names: Iterable[str]) -> None:
    """Forget the cached products (and revoke their fill leases) now."""
    names = [n for n in set(names) if n]
    if not names:
        return
    try:
        for start in range(0, len(names), 1000):
            chunk = names[start : start + 1000]
            _run(lambda c, chunk=chunk: _evalsha(c, _INVALIDATE_LUA, [_gen_key()], [_base(), *chunk]))
    except CacheUnavailable:
        _breaker.miss_invalidation()
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
        _run(_retire_generation)
    except CacheUnavailable:
        _breaker.miss_invalidation()


def retire_generation_on_commit(using: str | None = None) -> None:
    """Retire the generation once the current transaction commits (and now, as above)."""
    if transaction.get_connection(using).in_atomic_block:
        retire_generation()
    transaction.on_commit(retire_generation, using=using, robust=True)


def status() -> str:
    """Return "ok" when Redis answers a PING now, else "down"."""
    try:
        _run(lambda c: c.ping())
    except CacheUnavailable:
        return "down"
    return "ok"


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

    def take_leases(client) -> list:
        read, pipe = _script(client, _READ_LUA), client.pipeline(transaction=False)
        for name in names:
            read(keys=[gen_key], args=[base, name, token, lease_ms], client=pipe)
        return pipe.execute()

    answers = _run(take_leases)
    already = sum(1 for kind, _ in answers if kind == _HIT)
    leases = {name: gen for name, (kind, gen) in zip(names, answers) if kind == _LEASE}
    found = load_many(list(leases)) if leases else {}

    def fill(client) -> int:
        fill_script, release = _script(client, _FILL_LUA), _script(client, _RELEASE_LUA)
        pipe = client.pipeline(transaction=False)
        for name, gen in leases.items():
            if name in found:
                fill_script(keys=[gen_key], args=[base, name, token, gen, found[name], timeout], client=pipe)
            else:
                release(keys=[gen_key], args=[base, token, gen, name], client=pipe)
        return sum(1 for name, ok in zip(leases, pipe.execute()) if name in found and ok)

    filled = _run(fill) if leases else 0
    missing = [name for name in leases if name not in found]
    return WarmedBatch(already + filled, len(names) - already - filled - len(missing), missing)


def _scan_pattern(suffix: str) -> str:
    # KEY_PREFIX could hold glob characters; escape them for SCAN MATCH.
    prefix = _key(suffix)
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + "*"


def clear() -> int:
    """Delete every key of this service's product cache: products, leases, the
    generation and the throttle counters. Other keys (other prefixes) are
    untouched; never FLUSHDB."""

    def op(client) -> int:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=_scan_pattern(""), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += client.unlink(*batch)
        return deleted

    return _run(op)


def info() -> dict[str, object]:
    """Return how many products are cached now, and Redis memory figures."""

    def op(client) -> dict[str, object]:
        gen = client.get(_gen_key()) or b"(none yet)"
        pattern = _scan_pattern(gen.decode() + ":p:")
        cached = sum(1 for _ in client.scan_iter(match=pattern, count=1000))
        memory = client.info("memory")
        return {
            "cached_products": cached,
            "generation": gen.decode(),
            "used_memory": memory.get("used_memory"),
            "used_memory_human": memory.get("used_memory_human"),
        }

    return _run(op)


def rate_counter(key: str, window: int) -> int | None:
    """Count one hit in a fixed window; None when Redis is unavailable."""
    full_key = throttle_key(key, window)

    def op(client) -> int:
        pipe = client.pipeline(transaction=False)
        pipe.incr(full_key)
        # Not "EXPIRE ... NX" (Redis 7 only): the key is named for its window,
        # so refreshing its TTL on every hit is harmless.
        pipe.expire(full_key, window + 1)
        return pipe.execute()[0]

    try:
        return _run(op)
    except CacheUnavailable:
        return None


def throttle_key(key: str, window: int) -> str:
    """Return the Redis key of the current fixed window for ``key`` (as rate_counter)."""
    return _key(f"throttle:{key}:{int(time.time()) // window}")
