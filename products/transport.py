"""The Redis connection under the product cache: client, Lua scripts, circuit breaker, probe.

Nothing here knows what a product is. :mod:`products.cache` (the policy)
registers a *resync* function; this module calls it before any other command
once the process has reason to distrust what Redis holds (a write could not
invalidate), and a background probe makes sure that happens as soon as Redis
answers again, without waiting for a request.

Every call has the short socket timeout of the Django cache settings
(``REDIS_SOCKET_TIMEOUT``) and no retries. A failure opens a per-process
circuit breaker: for ``PRODUCT_CACHE_BACKOFF`` seconds :func:`run` raises
:class:`CacheUnavailable` at once and callers go to the database. The outage
is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import caches
from redis.exceptions import NoScriptError, RedisError

logger = logging.getLogger(__name__)

T = TypeVar("T")
Client = Any  # redis.Redis, or redis.cluster.RedisCluster

_LUA_DIR = Path(__file__).resolve().parent / "lua"


class CacheUnavailable(Exception):
    """Redis did not answer in time, or the circuit breaker is open."""


def client() -> Client:
    """Return the redis-py client of the default (django-redis) cache."""
    return caches["default"].client.get_client(write=True)


def make_key(suffix: str) -> str:
    """Return ``suffix`` with the cache's KEY_PREFIX and version, as Django builds keys."""
    return caches["default"].make_key(suffix)


# --- Scripts -----------------------------------------------------------------

_sources: dict[str, str] = {}
_scripts: dict[tuple[int, str], Any] = {}


def source(name: str) -> str:
    """Return the text of ``lua/<name>.lua`` (read once per process)."""
    text = _sources.get(name)
    if text is None:
        text = _sources[name] = (_LUA_DIR / f"{name}.lua").read_text()
    return text


def script(redis_client: Client, name: str) -> Any:
    """Return redis-py's Script for ``lua/<name>.lua``; it reloads itself after NOSCRIPT."""
    key = (id(redis_client.connection_pool), name)
    found = _scripts.get(key)
    if found is None:
        found = _scripts[key] = redis_client.register_script(source(name))
    return found


def evalsha(redis_client: Client, name: str, keys: list, args: list) -> Any:
    """Run script ``name`` with one EVALSHA on a pooled connection.

    The same command redis-py's Script sends, without its per-call wrapping
    (about a tenth of a cached hit's CPU); a NOSCRIPT reply (Redis restarted or
    flushed its scripts) goes through Script, which loads it.
    """
    loaded = script(redis_client, name)
    pool = redis_client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_command("EVALSHA", loaded.sha, len(keys), *keys, *args)
        reply = connection.read_response()
    except NoScriptError:
        pool.release(connection)
        connection = None
        return loaded(keys=keys, args=args, client=redis_client)
    except BaseException:
        connection.disconnect()
        raise
    finally:
        if connection is not None:
            pool.release(connection)
    return reply


# --- Circuit breaker and resync ------------------------------------------------

_resync: Callable[[Client], None] | None = None


def register_resync(function: Callable[[Client], None]) -> None:
    """Set what must run before any other command once Redis may hold stale values."""
    global _resync
    _resync = function


class _Breaker:
    """Per-process circuit breaker in front of Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._down = False  # an outage is in progress (logged once)
        self._resync_needed = False
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
            logger.warning(
                "Redis unavailable (%s: %s); serving products from the database and retrying every %.1fs",
                type(exc).__name__,
                exc,
                settings.PRODUCT_CACHE_BACKOFF,
            )
        try:
            # Drop pooled sockets: after a restart they are all dead, and
            # each would otherwise fail once, re-opening the breaker.
            client().connection_pool.disconnect()
        except Exception:  # pragma: no cover - best effort
            pass

    def succeeded(self) -> None:
        if self._down:
            with self._lock:
                was_down, self._down = self._down, False
            if was_down:
                logger.warning("Redis is answering again; product caching resumed")

    def need_resync(self) -> None:
        """Remember that Redis may hold stale values, and start the probe."""
        with self._lock:
            self._resync_needed = True
            if self._probe is None or not self._probe.is_alive():
                self._probe = threading.Thread(
                    target=_probe_until_resynced, name="product-cache-probe", daemon=True
                )
                self._probe.start()

    def take_resync(self) -> bool:
        if not self._resync_needed:
            return False  # the usual case: no lock on every Redis call
        with self._lock:
            needed, self._resync_needed = self._resync_needed, False
            return needed


_breaker = _Breaker()


def run(op: Callable[[Client], T]) -> T:
    """Run one Redis operation under the breaker; raise CacheUnavailable."""
    if _breaker.is_open:
        raise CacheUnavailable("circuit open")
    try:
        redis_client = client()
        if _breaker.take_resync() and _resync is not None:
            try:
                _resync(redis_client)
            except RedisError:
                _breaker.need_resync()
                raise
        result = op(redis_client)
    except RedisError as exc:
        _breaker.trip(exc)
        raise CacheUnavailable(str(exc)) from exc
    _breaker.succeeded()
    return result


def need_resync() -> None:
    """Make the registered resync run before the next command (the probe retries it)."""
    _breaker.need_resync()


def _probe_until_resynced() -> None:
    # A write that could not invalidate leaves a possibly stale value in
    # Redis; resync the moment Redis answers, without waiting for this
    # process's next request.
    while True:
        time.sleep(0.25)
        try:
            run(lambda redis_client: redis_client.ping())
            return
        except CacheUnavailable:
            continue
        except Exception:  # pragma: no cover - never let the probe die noisily
            logger.exception("Product cache probe failed")


def status() -> str:
    """Return "ok" when Redis answers a PING now, else "down"."""
    try:
        run(lambda redis_client: redis_client.ping())
    except CacheUnavailable:
        return "down"
    return "ok"


def reset() -> None:
    """Forget any outage and pending resync this process saw (for tests)."""
    _breaker.__init__()
