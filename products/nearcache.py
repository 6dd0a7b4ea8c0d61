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
* A near hit is allowed only within ``PROOF_WINDOW`` (50 ms) of sending the
  last command Redis answered on that connection; past it, one round trip
  (a tiny script: `CLIENT PAUSE WRITE` holds scripts as it holds writes, not
  `PING`) proves the connection is live and that every message sent before
  it has arrived. The window is shorter than
  the socket timeout a writer waits before it gives up invalidating, so a
  Redis that hangs stops near hits before any write made during the hang is
  acknowledged.
* The connection dropping, any error on it, or the circuit breaker open:
  everything is flushed, and reads go the usual way until it reconnects.
  So are the entries when a write of this process's misses Redis, and again
  when the resync that delivers it has deleted the old values.

On Redis Cluster, one such connection per master, opened the first time a
product of that master's slots is read through it. An entry counts only
while this process's slot map still gives its slot to the master it was read
on; a redirection (``MOVED``/``ASK``: a slot moved, a master was demoted), any
error, or a change of the slot map drops the whole near cache. The proof
asks whether the entry's value key still exists (a dataset swapped in by
SWAPDB sends no message, and then holds no such key), so on a cluster a
master demoted by a failover answers MOVED instead of proving anything.

``PRODUCT_NEAR_CACHE``, on by default. The argument that no acknowledged
write is followed by an old read is in docs/cache.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from django.conf import settings
from redis.connection import Connection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from . import scripts, transport
from .cache import ABSENT, CachedProduct

logger = logging.getLogger("products.cache")

PROOF_WINDOW = 0.05  # seconds; must stay below REDIS_SOCKET_TIMEOUT (checked)
_HIT = 1


def configured() -> bool:
    """Return True when settings ask for a near cache (PRODUCT_NEAR_CACHE, a size above 0) and a product cache.

    A size of 0 is off: tracked reads that keep nothing would cost Redis a
    tracking entry and a message per read for no near hit.
    """
    return (
        bool(settings.PRODUCT_NEAR_CACHE)
        and settings.PRODUCT_NEAR_CACHE_SIZE > 0
        and bool(settings.PRODUCT_CACHE_ENABLED)
    )


class _Tracker:
    """One RESP3 connection with ``CLIENT TRACKING ON`` to one server (one master of a cluster)."""

    __slots__ = ("connection", "proved_at")

    def __init__(self, connection: Connection, proved_at: float) -> None:
        self.connection = connection
        # When Redis was last known to answer: the time a command was *sent*
        # whose reply has since been read, never the time the reply was read.
        # A thread can wait long for the CPU or the GIL between Redis's reply
        # and its own clock reading; Redis may have hung meanwhile, and a
        # window counted from the later reading would outlast a writer's timeout.
        self.proved_at = proved_at

    def drain(self) -> None:
        # Handle every invalidation already received, without waiting for more.
        connection = self.connection
        if connection._sock is None:
            # Closed while still held: redis-py would reconnect on its own,
            # without CLIENT TRACKING, and no message would come again.
            raise _TrackerClosed
        while connection.can_read(timeout=0):
            connection.read_response(push_request=True)


class _NearCache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        # One tracked connection per server: key None on one Redis, the node's
        # "host:port" on a cluster.
        self.trackers: dict[str | None, _Tracker] = {}
        # name -> (JSON bytes, the Redis keys it depends on: generation, value,
        #          the tracker it was read on, its slot on a cluster or -1)
        self.entries: OrderedDict[str, tuple[bytes, tuple[bytes, bytes], str | None, int]] = OrderedDict()
        self.names_by_key: dict[bytes, set[str]] = {}
        self.admitted: OrderedDict[str, None] = OrderedDict()  # names Redis served lately
        self.usable: bool | None = None  # None: not decided yet (Redis refused tracking: False)
        self.nodes_manager = None  # a cluster's slot map, as of the last tracked read
        self.resync_epoch = transport.resync_epoch()  # the entries are older: see get()

    # --- connection -----------------------------------------------------------

    def _connect(self, pool) -> _Tracker:
        # The pool's own connection class: TLS, and on Sentinel the class
        # that asks the sentinels for the master's address.
        kwargs = dict(pool.connection_kwargs)
        kwargs["protocol"] = 3
        connection = pool.connection_class(**kwargs)
        started = time.monotonic()
        try:
            connection.connect()  # runs transport's server-identity check first
            connection._parser.set_invalidation_push_handler(self._on_push)
            # Not NOLOOP: with it Redis also leaves out the invalidations of
            # keys it stops tracking or evicts while running this connection's
            # own command (a full tracking table, maxmemory), and the copies
            # of those keys would never hear of a later write. The messages
            # for this connection's own writes (a miss's lease) name keys no
            # copy depends on, or drop a copy that was changing anyway.
            connection.send_command("CLIENT", "TRACKING", "ON")
            connection.read_response()
        except ResponseError as exc:
            # A Redis without RESP3 or client tracking (before 6.0): off for
            # this process, reads go the usual way.
            connection.disconnect()
            self.usable = False
            logger.warning("Product near cache off: Redis refused RESP3 client tracking (%s)", exc)
            raise _Unavailable from None
        except BaseException:
            connection.disconnect()
            raise
        self.usable = True
        return _Tracker(connection, started)

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
        """Forget every entry and every tracked connection (error, redirection, breaker, tests)."""
        self._flush()
        trackers, self.trackers = self.trackers, {}
        for tracker in trackers.values():
            try:
                tracker.connection.disconnect()
            except Exception:  # pragma: no cover - best effort
                pass

    # --- reads ----------------------------------------------------------------

    def get(self, name: str) -> CachedProduct | None:
        """Return the product from memory when Redis has not invalidated it, else None."""
        with self.lock:
            if transport.breaker_open():
                # A failure somewhere: forget the entries and the connections
                # (on a cluster, one may lead to a master that is gone).
                if self.entries or self.trackers:
                    self.drop()
                return None
            if self.resync_epoch != transport.resync_epoch():
                # A write of this process's missed Redis, or its resync just
                # deleted what it replaced: the entries may be those values,
                # and the delete's messages may still be on their way.
                # (Entries read after this went through the resync first.)
                self.resync_epoch = transport.resync_epoch()
                self._flush()
                return None
            entry = self.entries.get(name)
            if entry is None:
                return None
            node = entry[2]
            tracker = self.trackers.get(node)
            if tracker is None:
                self._forget(name)
                return None
            try:
                if node is not None and _owner(self.nodes_manager, entry[3]) != node:
                    # The slot map moved the slot (a failover, a migration):
                    # what this node said about it no longer counts.
                    self.drop()
                    return None
                tracker.drain()
                if (
                    time.monotonic() - tracker.proved_at > PROOF_WINDOW
                    and not self._prove(tracker, entry)
                    and name in self.entries
                ):
                    # The value is gone, and no message said so: the dataset was
                    # replaced under the connection (SWAPDB), so a write's DEL
                    # finds nothing to delete and sends none. Forget every copy.
                    # (Or the check itself expired the key: a copy lost, no harm.)
                    # A write's message read on the way to the proof's reply
                    # dropped the entry already: announced, nothing else to drop.
                    logger.info("Product near cache: %r left Redis unannounced; every copy dropped", name)
                    self._flush()
            except _TrackerClosed:
                self.drop()
                return None
            except _REDIRECTED as exc:
                # This node no longer serves the slot (demoted, or the slot
                # moved): forget everything; the usual read follows the redirection.
                self.drop()
                _reload_slots(exc)
                return None
            except (RedisError, OSError) as exc:
                self.drop()
                transport.trip(exc)
                return None
            entry = self.entries.get(name)
            return None if entry is None else CachedProduct(entry[0], hit=True)

    def _prove(self, tracker: _Tracker, entry) -> bool:
        # Every message sent before this reply has arrived once it is read
        # (pushes before it are handled on the way). A script, not a PING:
        # `CLIENT PAUSE ... WRITE` (a controlled failover) holds scripts and
        # writes but answers PING, and a writer's DEL held by it sends no
        # message; the proof must wait as that DEL does (then time out, and
        # the near cache drops). The script asks whether the entry's value
        # is still there (False: see get()); on a cluster that also proves
        # the node is still the master of its slot: a demoted master or a
        # slot moved away answers MOVED.
        connection = tracker.connection
        sent = time.monotonic()
        connection.send_command("EVAL", scripts.source("proof"), 2, *entry[1])
        exists = connection.read_response()
        tracker.proved_at = sent
        return exists == 1

    def read(self, name: str, keys: list, args: list):
        """Run the read script on the tracked connection; remember a hit. Raise RedisError.

        Return None when this read cannot be tracked (no near cache here, or
        on a cluster a redirection): the caller reads the usual way.
        """
        with self.lock:
            client = transport.client()
            node, slot = None, -1
            try:
                if transport.is_cluster(client):
                    slot = client.keyslot(keys[0])
                    self.nodes_manager = client.nodes_manager
                    cluster_node = client.nodes_manager.get_node_from_slot(slot)
                    if cluster_node.redis_connection is None:
                        return None
                    node = cluster_node.name
                    tracker = self.trackers.get(node)
                    if tracker is None:
                        pool = cluster_node.redis_connection.connection_pool
                        tracker = self.trackers[node] = self._connect(pool)
                else:
                    tracker = self.trackers.get(None)
                    if tracker is None:
                        tracker = self.trackers[None] = self._connect(client.connection_pool)
                tracker.drain()
                connection = tracker.connection
                loaded = scripts.script(client, "read")
                sent = time.monotonic()
                connection.send_command("EVALSHA", loaded.sha, len(keys), *keys, *args)
                try:
                    reply = connection.read_response()
                except NoScriptError:  # Redis restarted or flushed its scripts
                    connection.send_command("EVAL", scripts.source("read"), len(keys), *keys, *args)
                    reply = connection.read_response()
                tracker.proved_at = sent
            except _Unavailable:
                return None
            except _TrackerClosed:
                self.drop()
                return None
            except _REDIRECTED as exc:
                self.drop()
                _reload_slots(exc, client)
                return None
            except (RedisError, OSError) as exc:
                self.drop()
                if node is not None and isinstance(exc, (ConnectionError, TimeoutError, OSError)):
                    _refresh_slots(client, node)
                raise
            if reply[0] == _HIT and reply[1] != ABSENT:  # an unknown name stays in Redis only
                self._remember(name, keys, reply[1], node, slot)
            return reply

    def _remember(self, name: str, keys: list, data: bytes, node: str | None, slot: int) -> None:
        # The value is valid while its bucket's generation and its value key
        # are unchanged (the lease does not matter once a value exists).
        depends = tuple(key.encode() if isinstance(key, str) else key for key in keys[:2])
        self._forget(name)
        self.entries[name] = (data, depends, node, slot)
        for key in depends:
            self.names_by_key.setdefault(key, set()).add(name)
        limit = settings.PRODUCT_NEAR_CACHE_SIZE
        while len(self.entries) > limit:
            self._forget(next(iter(self.entries)))


# Replies that mean "this node does not serve that slot now".
_REDIRECTED = (MovedError, AskError, TryAgainError, ClusterDownError)


def _owner(nodes_manager, slot: int) -> str | None:
    """Return the name of the master this process's slot map gives ``slot`` to."""
    try:
        return nodes_manager.slots_cache[slot][0].name
    except (LookupError, AttributeError):
        return None


def _reload_slots(exc: Exception, client=None) -> None:
    # A MOVED means the topology changed (a failover moves every slot of a
    # master at once): read the whole slot map now, rather than learn it one
    # MOVED, and one dropped near cache, at a time.
    if isinstance(exc, MovedError):
        try:
            (client or transport.client()).nodes_manager.initialize()
        except Exception:  # the usual read's own redirection handling tries again
            pass


def _refresh_slots(client, node: str) -> None:
    # As redis-py does after a connection error: try that node last and
    # re-read the slot map, so a failed-over master is not asked again.
    try:
        client.nodes_manager.move_node_to_end_of_cached_nodes(node)
        client.nodes_manager.initialize(last_failed_node_name=node)
    except Exception:  # the map is refreshed on the next failure or MOVED
        pass


class _Unavailable(Exception):
    """No near cache here: Redis refused RESP3 client tracking."""


class _TrackerClosed(Exception):
    """A tracked connection was found closed (not by an error on it): drop it, and read the usual way."""


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


def holds(name: str) -> str | None:
    """Return where this process's copy of ``name`` came from ("" on one Redis, a cluster node's name), or None without one."""
    entry = _near.entries.get(name)
    if entry is None:
        return None
    return entry[2] or ""


def admit(name: str) -> None:
    """Note that Redis just served ``name`` (a hit): its next read goes through tracking.

    Only products read twice are tracked: a one-off read (a cold, random
    walk) costs Redis a tracking entry and a message on the fill for nothing.
    """
    with _near.lock:
        _near.admitted[name] = None
        _near.admitted.move_to_end(name)
        while len(_near.admitted) > 4 * settings.PRODUCT_NEAR_CACHE_SIZE:
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
        if reply is None:  # not trackable now (no tracking, a redirection): the usual read
            return scripts.evalsha(client, "read", keys, args)
        return reply

    return read


def reset() -> None:
    """Drop every entry and the tracked connections (tests, after fork)."""
    global _configured
    with _near.lock:
        _near.drop()
        _near.usable = None
        _near.nodes_manager = None
        _configured = None


def drop_near_cache_on_setting_change(setting: str, **kwargs) -> None:
    """Forget every copy and tracked connection when the cache's settings change (tests)."""
    if setting in (
        "CACHES",
        "PRODUCT_NEAR_CACHE",
        "PRODUCT_NEAR_CACHE_SIZE",
        "PRODUCT_CACHE_ENABLED",
        "REDIS_CLUSTER_NODES",
    ):
        reset()
