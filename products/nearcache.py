"""A per-process near cache of products, kept correct by Redis server-assisted invalidation.

A cached hit used to cost one Redis round trip. Here each process keeps the
products it read recently in memory, and serves them without Redis while
Redis itself says they are unchanged:

* Reads that may fill the near cache go through one dedicated RESP3
  connection with ``CLIENT TRACKING ON``: Redis remembers every key the
  read script touched (the bucket's generation, the value, the lease) and,
  when any of them changes (an invalidation deletes the value, a retirement
  sets a new generation, the value expires or is evicted), pushes an
  ``invalidate`` message on that connection, queued before the reply to the
  command that changed it.
* Before every near hit the connection is drained without blocking, and the
  entries those messages name are dropped first.
* A near hit is allowed only within ``PROOF_WINDOW`` (50 ms) of the last reply
  on that connection; past it, one PING proves the connection is live and
  that every message sent before it has arrived. The window is shorter than
  the socket timeout a writer waits before it gives up invalidating, so a
  Redis that hangs stops near hits before any write made during the hang is
  acknowledged.
* The connection dropping, any error on it, or the circuit breaker open:
  everything is flushed, and reads go the usual way until it reconnects.

Only on one Redis or Sentinel (``PRODUCT_NEAR_CACHE``, on by default); off on
Redis Cluster (a check says so). The argument that no acknowledged write is
followed by an old read is in docs/cache.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from django.conf import settings
from django.core.signals import setting_changed
from redis.connection import Connection
from redis.exceptions import NoScriptError, RedisError, ResponseError

from . import scripts, transport
from .cache import CachedProduct

logger = logging.getLogger("products.cache")

PROOF_WINDOW = 0.05  # seconds; must stay below REDIS_SOCKET_TIMEOUT (checked)
_HIT = 1


def configured() -> bool:
    """Return True when settings ask for a near cache (PRODUCT_NEAR_CACHE) on a non-cluster Redis."""
    return (
        bool(getattr(settings, "PRODUCT_NEAR_CACHE", True))
        and bool(getattr(settings, "PRODUCT_CACHE_ENABLED", True))
        and not getattr(settings, "REDIS_CLUSTER_NODES", None)
    )


class _NearCache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connection: Connection | None = None
        # name -> (JSON bytes, the Redis keys it depends on: generation, value)
        self.entries: OrderedDict[str, tuple[bytes, tuple[bytes, bytes]]] = OrderedDict()
        self.names_by_key: dict[bytes, set[str]] = {}
        self.admitted: OrderedDict[str, None] = OrderedDict()  # names Redis served lately
        self.proved_at = 0.0
        self.usable: bool | None = None  # None: not decided yet (cluster or not)

    # --- connection -----------------------------------------------------------

    def _connect(self) -> Connection:
        client = transport.client()
        if transport.is_cluster(client):
            self.usable = False
            raise _Unavailable
        kwargs = dict(client.connection_pool.connection_kwargs)
        kwargs["protocol"] = 3
        connection = Connection(**kwargs)
        try:
            connection.connect()  # runs transport's server-identity check first
            connection._parser.set_invalidation_push_handler(self._on_push)
            # NOLOOP: this connection's own writes (the lease a miss takes) need no message.
            connection.send_command("CLIENT", "TRACKING", "ON", "NOLOOP")
            connection.read_response()
        except ResponseError as exc:
            # A Redis without RESP3 or client tracking (before 6.0): off for
            # this process, reads go the usual way.
            connection.disconnect()
            self.usable = False
            logger.warning("Product near cache off: Redis refused RESP3 client tracking (%s)", exc)
            raise _Unavailable from None
        self.usable = True
        self.proved_at = time.monotonic()
        return connection

    def _on_push(self, message) -> None:
        # [b"invalidate", [key, ...]] or [b"invalidate", None] (Redis flushed).
        if not message or message[0] != b"invalidate":
            return
        keys = message[1]
        if keys is None:
            self._flush()
            return
        for key in keys:
            for name in tuple(self.names_by_key.get(key, ())):
                self._forget(name)

    def _forget(self, name: str) -> None:
        entry = self.entries.pop(name, None)
        if entry is None:
            return
        for key in entry[1]:
            names = self.names_by_key.get(key)
            if names is not None:
                names.discard(name)
                if not names:
                    del self.names_by_key[key]

    def _flush(self) -> None:
        self.entries.clear()
        self.names_by_key.clear()
        self.admitted.clear()

    def drop(self) -> None:
        """Forget every entry and the connection (error, breaker, tests)."""
        self._flush()
        if self.connection is not None:
            try:
                self.connection.disconnect()
            except Exception:  # pragma: no cover - best effort
                pass
        self.connection = None

    def _drain(self) -> None:
        # Handle every invalidation already received, without waiting for more.
        connection = self.connection
        while connection.can_read(timeout=0):
            connection.read_response(push_request=True)

    # --- reads ----------------------------------------------------------------

    def get(self, name: str) -> CachedProduct | None:
        """Return the product from memory when Redis has not invalidated it, else None."""
        with self.lock:
            if self.connection is None or transport._breaker.is_open:
                if self.entries:
                    self._flush()
                return None
            if name not in self.entries:
                return None
            try:
                self._drain()
                if time.monotonic() - self.proved_at > PROOF_WINDOW:
                    self.connection.send_command("PING")
                    self.connection.read_response()  # pushes before it are handled on the way
                    self.proved_at = time.monotonic()
            except (RedisError, OSError) as exc:
                self.drop()
                transport._breaker.trip(exc)
                return None
            entry = self.entries.get(name)
            return None if entry is None else CachedProduct(entry[0], hit=True)

    def read(self, name: str, keys: list, args: list):
        """Run the read script on the tracked connection; remember a hit. Raise RedisError."""
        with self.lock:
            try:
                if self.connection is None:
                    self.connection = self._connect()
                self._drain()
                loaded = scripts.script(transport.client(), "read")
                self.connection.send_command("EVALSHA", loaded.sha, len(keys), *keys, *args)
                try:
                    reply = self.connection.read_response()
                except NoScriptError:  # Redis restarted or flushed its scripts
                    self.connection.send_command("EVAL", scripts.source("read"), len(keys), *keys, *args)
                    reply = self.connection.read_response()
                self.proved_at = time.monotonic()
            except _Unavailable:
                return None
            except (RedisError, OSError):
                self.drop()
                raise
            if reply[0] == _HIT:
                self._remember(name, keys, reply[1])
            return reply

    def _remember(self, name: str, keys: list, data: bytes) -> None:
        # The value is valid while its bucket's generation and its value key
        # are unchanged (the lease does not matter once a value exists).
        depends = tuple(key.encode() if isinstance(key, str) else key for key in keys[:2])
        self._forget(name)
        self.entries[name] = (data, depends)
        for key in depends:
            self.names_by_key.setdefault(key, set()).add(name)
        limit = getattr(settings, "PRODUCT_NEAR_CACHE_SIZE", 1000)
        while len(self.entries) > limit:
            self._forget(next(iter(self.entries)))


class _Unavailable(Exception):
    """No near cache on this configuration (Redis Cluster)."""


_near = _NearCache()


_configured: bool | None = None  # configured(), read once (reset when a setting it reads changes)


def enabled() -> bool:
    """Return True when this process may use a near cache (see configured())."""
    global _configured
    if _configured is None:
        _configured = configured()
    return _configured and _near.usable is not False


def get(name: str) -> CachedProduct | None:
    """Return a near hit, or None (then read through :func:`read_script`)."""
    if not enabled():
        return None
    return _near.get(name)


def admit(name: str) -> None:
    """Note that Redis just served ``name`` (a hit): its next read goes through tracking.

    Only products read twice are tracked: a one-off read (a cold, random
    walk) costs Redis a tracking entry and a message on the fill for nothing.
    """
    with _near.lock:
        _near.admitted[name] = None
        _near.admitted.move_to_end(name)
        while len(_near.admitted) > 4 * getattr(settings, "PRODUCT_NEAR_CACHE_SIZE", 1000):
            _near.admitted.popitem(last=False)


def read_script(name: str):
    """Return a reader for cache.get_product: the read script on the tracked connection.

    None (the usual pooled read) when this configuration has no near cache,
    or ``name`` has not been admitted (:func:`admit`).
    """
    if not enabled() or name not in _near.admitted:
        return None

    def read(client, keys: list, args: list):
        reply = _near.read(name, keys, args)
        if reply is None:  # found to be a cluster just now
            return scripts.evalsha(client, "read", keys, args)
        return reply

    return read


def reset() -> None:
    """Drop every entry and the tracked connection (tests, after fork)."""
    global _configured
    with _near.lock:
        _near.drop()
        _near.usable = None
        _configured = None


def _drop_on_setting_change(setting: str, **kwargs) -> None:
    if setting in ("CACHES", "PRODUCT_NEAR_CACHE", "PRODUCT_CACHE_ENABLED", "REDIS_CLUSTER_NODES"):
        reset()


setting_changed.connect(_drop_on_setting_change, dispatch_uid="products.nearcache.drop_on_setting_change")
