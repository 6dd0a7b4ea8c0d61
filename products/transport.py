"""The Redis connection under the product cache: client, breaker, probe, server identity.

The Lua scripts are loaded and run by :mod:`products.scripts`.

Nothing here knows what a product is; :mod:`products.cache` (the policy)
registers two functions:

* ``resync(client)``, run before any other command once the process knows
  Redis may hold stale values (a write could not invalidate). A background
  probe tries every ``_PROBE_INTERVAL`` seconds, past the breaker's back-off,
  so it runs as soon as Redis answers again, request or not.
* ``adopt(connection, run_id)``, run on every new connection to a server
  instance this process has not checked yet (its ``run_id`` from ``INFO
  server``, on a cluster with its replication id, differs from the last one
  seen at that address, or none was seen), *before* the connection carries
  any other command. A restart or a failover shows a new run_id, a cluster
  replica promoted a second time a new replication id.

Every call has the short socket timeout of the Django cache settings
(``REDIS_SOCKET_TIMEOUT``) and no retries. A failure opens a per-process
circuit breaker: for ``PRODUCT_CACHE_BACKOFF`` seconds :func:`run` raises
:class:`CacheUnavailable` at once and callers go to the database; a call made
with ``force=True`` (invalidations, the probe) still tries Redis. The outage
is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import caches
from redis.cluster import RedisCluster
from redis.exceptions import ClusterDownError, ConnectionError, RedisError, TimeoutError

from . import metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")
Client = Any  # redis.Redis, or redis.cluster.RedisCluster
Connection = Any  # redis.connection.AbstractConnection

# While a resync is pending, how often the probe tries Redis (seconds). Each
# try costs at most one socket timeout, so a Redis that answers again is
# resynced within about this plus one timeout.
_PROBE_INTERVAL = 0.1


class CacheUnavailable(Exception):
    """Redis did not answer in time, or the circuit breaker is open."""


def client() -> Client:
    """Return the redis-py client of the default (django-redis) cache, identity check installed."""
    redis_client = caches["default"].client.get_client(write=True)
    # django-redis builds a client per thread around one pool per process
    # (one RedisCluster per process): the check goes on what they share.
    shared = redis_client if is_cluster(redis_client) else redis_client.connection_pool
    if not getattr(shared, "_products_checks_server", False):
        with _adopt_lock:  # two threads' first calls must not wrap the hook twice
            if not getattr(shared, "_products_checks_server", False):
                _install_server_check(redis_client)
                shared._products_checks_server = True
                _first_use(redis_client)  # a new client (a settings change in tests)
    if not _first_use_seen:
        _first_use(redis_client)
    return redis_client


# Run with each new client, and once more in a forked child: the policy's
# watchers (products.sentinelwatch) start here.
_on_first_use: list[Callable[[Client], None]] = []
_first_use_seen = False


def register_first_use(function: Callable[[Client], None]) -> None:
    """Add what runs with each new Redis client of this process (and a forked child's first)."""
    if function not in _on_first_use:
        _on_first_use.append(function)


def _first_use(redis_client: Client) -> None:
    global _first_use_seen
    _first_use_seen = True
    for function in _on_first_use:
        try:
            function(redis_client)
        except Exception:  # pragma: no cover - a watcher must not break the cache
            logger.exception("Starting %s failed", getattr(function, "__qualname__", function))


def is_cluster(redis_client: Client) -> bool:
    return isinstance(redis_client, RedisCluster)


def configured_for_cluster() -> bool:
    """Whether the settings point the cache at a Redis Cluster (no client needed)."""
    return settings.REDIS_TOPOLOGY.kind == "cluster"


def make_key(suffix: str) -> str:
    """Return ``suffix`` with the cache's KEY_PREFIX and version, as Django builds keys."""
    return caches["default"].make_key(suffix)


# --- Server identity ---------------------------------------------------------------

_adopt: Callable[[Connection, str], None] | None = None
_known_servers: dict[tuple, str] = {}  # address -> server identity this process has adopted
_adopt_lock = threading.Lock()
_adopting = threading.local()  # .active: this thread is inside an adoption
# How long a new connection waits for another thread's adoption to finish
# (in socket timeouts); past it the connection fails, as a timeout would.
_ADOPT_WAIT_TIMEOUTS = 5


def register_adopt(function: Callable[[Connection, str], None]) -> None:
    """Set what runs on a new connection to a server instance this process has not checked."""
    global _adopt
    _adopt = function


def _check_server(connection: Connection) -> None:
    # Runs inside connect(), before the connection carries anything else, so
    # no reply from an unchecked server (a restart from an old snapshot, a
    # promoted replica) can reach a caller. A RedisError here fails the
    # connect, which the breaker handles like any other failure.
    identity = _server_identity(connection)
    address = (
        getattr(connection, "host", None),
        getattr(connection, "port", None),
        getattr(connection, "path", None),
    )
    if _known_servers.get(address) == identity:
        return
    if getattr(_adopting, "active", False):
        # This thread's adoption lost its connection (another thread's
        # breaker closed it) and redis-py is reconnecting it: fail, rather
        # than wait for the lock this thread holds.
        raise ConnectionError("the connection closed during the server identity check")
    # One adoption per server and process: threads opening connections at
    # once (a burst after start-up) wait for the first instead of each
    # retiring generations the others have just started to fill; never
    # longer than a few socket timeouts.
    if not _adopt_lock.acquire(timeout=_ADOPT_WAIT_TIMEOUTS * settings.REDIS_SOCKET_TIMEOUT):
        raise TimeoutError("another thread's server identity check did not finish in time")
    try:
        _adopting.active = True
        if _known_servers.get(address) != identity:
            if _adopt is not None:
                _adopt(connection, identity)
            _known_servers[address] = identity
    finally:
        _adopting.active = False
        _adopt_lock.release()


def _server_identity(connection: Connection) -> str:
    """The server instance behind ``connection``: its run_id, and on a cluster its replication id.

    The run_id changes only at a restart. A cluster replica that was a master
    once, was demoted (a manual failover back) and is promoted again keeps
    it, while its data may lack invalidations the master in between took
    with it; every promotion gives a master a new ``master_replid``. On one
    Redis or Sentinel the ledger's epoch covers that case (products.serverledger),
    and the replication id stays out: it also changes without a promotion
    (a master's first replica, ``redis-cli --rdb``, an hour without replicas),
    which would cost the whole cache each time. Both come in one round trip.
    """
    sections = ("server", "replication") if configured_for_cluster() else ("server",)
    connection.send_packed_command(connection.pack_commands([("INFO", section) for section in sections]))
    fields = {}
    for _ in sections:
        info = connection.read_response()
        info = info.decode() if isinstance(info, bytes) else str(info)
        for line in info.splitlines():
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    run_id, replid = fields.get("run_id", ""), fields.get("master_replid", "")
    return f"{run_id}.{replid[:16]}" if replid else run_id


def _drop_idle_connections(redis_client: Client) -> None:
    """Close the pooled connections no thread is using, on every node of a cluster.

    Not redis-py's ``disconnect_connection_pools()``: it closes the
    connections other threads are in the middle of using too, and their
    commands then fail inside redis-py with a ``TypeError`` (a socket gone
    to ``None``), not a ``RedisError``.
    """
    if is_cluster(redis_client):
        pools = [
            node.redis_connection.connection_pool
            for node in redis_client.get_nodes()
            if node.redis_connection
        ]
    else:
        pools = [redis_client.connection_pool]
    for pool in pools:
        try:
            pool.disconnect(inuse_connections=False)
        except OSError:  # already closed
            pass


def _install_server_check(redis_client: Client) -> None:
    """Make every new connection of ``redis_client`` check the server's identity first."""
    if is_cluster(redis_client):
        # RedisCluster calls this after its own on_connect, for each node's
        # connections, including nodes it discovers later.
        previous = redis_client.user_on_connect_func

        def check(connection: Connection) -> None:
            if previous is not None:
                previous(connection)
            _check_server(connection)

        redis_client.user_on_connect_func = check
        redis_client.disconnect_connection_pools()  # connections made before were not checked
    else:
        pool = redis_client.connection_pool
        previous = pool.connection_kwargs.get("redis_connect_func")

        def connect_and_check(connection: Connection) -> None:
            if previous is not None:
                previous(connection)
            else:
                connection.on_connect()
            _check_server(connection)

        pool.connection_kwargs["redis_connect_func"] = connect_and_check
        pool.disconnect(inuse_connections=False)


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
            metrics.breaker_state(True)
            logger.warning(
                "Redis unavailable (%s: %s); products are read from the database, and Redis is tried again every %.1fs",
                type(exc).__name__,
                _describe(exc),
                settings.PRODUCT_CACHE_BACKOFF,
            )
        try:
            # Drop pooled sockets: after a restart they are all dead, and
            # each would otherwise fail once, re-opening the breaker.
            # Idle ones only: a connection another thread is using (in the
            # middle of its server check, say) fails on its own.
            _drop_idle_connections(client())
        except Exception:  # pragma: no cover - best effort
            pass

    def succeeded(self) -> None:
        if self._down or self._open_until:
            with self._lock:
                was_down, self._down, self._open_until = self._down, False, 0.0
            if was_down:
                metrics.breaker_state(False)
                logger.warning("Redis is answering again; product caching resumed")

    def need_resync(self) -> None:
        """Remember that Redis may hold stale values, and start the probe."""
        with self._lock:
            self._resync_needed = True
            if self._probe is None:
                self._probe = threading.Thread(
                    target=self._probe_until_resynced, name="product-cache-probe", daemon=True
                )
                self._probe.start()

    def _probe_until_resynced(self) -> None:
        # A write that could not invalidate leaves a possibly stale value in
        # Redis; resync the moment Redis answers, without waiting for this
        # process's next request, nor for the breaker's back-off.
        while True:
            time.sleep(_PROBE_INTERVAL)
            with self._lock:
                if not self._resync_needed:
                    self._probe = None  # need_resync() starts a new one
                    return
            try:
                run(lambda redis_client: redis_client.ping(), force=True)
            except CacheUnavailable:
                continue
            except Exception:  # pragma: no cover - never let the probe die noisily
                logger.exception("Product cache probe failed")

    def take_resync(self) -> bool:
        if not self._resync_needed:
            return False  # the usual case: no lock on every Redis call
        with self._lock:
            needed, self._resync_needed = self._resync_needed, False
            return needed


_breaker = _Breaker()


def _describe(exc: BaseException) -> str:
    """Return the failure in one short line (redis-py's Sentinel errors append the whole client's repr)."""
    text = str(exc).split(" : <redis.", 1)[0].strip()
    if type(exc).__name__ == "MasterNotFoundError":
        # A wrong REDIS_SENTINEL_PASSWORD reads the same: redis-py hides it.
        text += (
            " (no sentinel answered with that master: check REDIS_SENTINEL_MASTER, "
            "REDIS_SENTINEL_PASSWORD and that the sentinels are reachable)"
        )
    return text if len(text) <= 400 else text[:400] + "..."


def _after_fork_in_child() -> None:
    # A lock another thread held at the fork (the master's outbox applier or
    # probe, mid-adoption) would stay held forever in the child: new ones.
    global _adopt_lock, _adopting, _first_use_seen
    _first_use_seen = False  # the parent's watcher threads did not follow the fork
    _adopt_lock = threading.Lock()
    _adopting = threading.local()
    _breaker._lock = threading.Lock()
    _breaker._probe = None  # the thread did not follow the fork; the next need_resync() starts one


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run(op: Callable[[Client], T], *, force: bool = False) -> T:
    """Run one Redis operation under the breaker; raise CacheUnavailable.

    ``force`` tries Redis even while the breaker is open: an invalidation must
    never be skipped because of an earlier failure, and a success closes the
    breaker.
    """
    if not force and _breaker.is_open:
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


def check_servers_again() -> None:
    """Check the server behind this process's connections again, now (another process switched servers).

    Idle connections close and one new connection runs the identity check
    at once; a connection in use carries on, which is safe: the check's
    retirements are the server's, seen through any connection.
    """
    _known_servers.clear()
    _drop_idle_connections(client())
    try:
        run(lambda c: c.ping(), force=True)
    except CacheUnavailable:
        pass  # checked on the next connection that succeeds


def probe_if_down() -> None:
    """Try Redis once when this process saw it fail and the back-off is over.

    A process that serves no request would otherwise stay "down" (the
    breaker gauge, the log) long after Redis came back.
    """
    if _breaker._down and not _breaker.is_open:
        try:
            run(_check_serving)
        except CacheUnavailable:
            pass


def _check_serving(redis_client: Client) -> None:
    """PING; on a Cluster, ask whether the cluster serves every slot instead.

    A cluster node answers PING while its cluster is down (a master and its
    replicas lost: every command gets CLUSTERDOWN), so PING alone would call
    such a cluster up: /health/ would say "ok" and the probe "caching resumed".
    """
    if not configured_for_cluster():
        redis_client.ping()
        return
    state = redis_client.cluster_info(target_nodes=RedisCluster.DEFAULT_NODE).get("cluster_state")
    if state != "ok":
        raise ClusterDownError(f"the cluster's state is {state!r}: not every slot is served")


def breaker_open() -> bool:
    """Return True while the breaker skips Redis (a failure less than PRODUCT_CACHE_BACKOFF ago)."""
    return _breaker.is_open


def need_resync() -> None:
    """Make the registered resync run before the next command (the probe retries it)."""
    _breaker.need_resync()


def status() -> str:
    """Return "ok" when Redis answers a PING now (a Cluster: serves every slot), else "down"."""
    try:
        run(_check_serving)
    except CacheUnavailable:
        return "down"
    return "ok"


def reset() -> None:
    """Forget any outage, pending resync and checked server this process saw (for tests)."""
    _breaker.__init__()
    _known_servers.clear()
