"""The Redis connection under the product cache: client, breaker, probe (server identity: serveridentity).

The Lua scripts are loaded and run by :mod:`products.scripts`.

Nothing here knows what a product is; the cache's modules register two
functions (``missed`` the first, ``cachekeys`` the second, through
:mod:`products.serveridentity`), and ``register_first_use`` takes what must
start with the first client (the Sentinel watcher):

* ``resync(client)``, run before any other command once the process knows
  Redis may hold stale values (a write could not invalidate), in one thread
  at a time: the other threads' commands wait for it to succeed, for at
  most one socket timeout (then their callers read the database). Deletes
  and retirements (``run(deletes_only=True)``) do not wait: in either order
  the two leave the same. A
  background probe tries every ``_PROBE_INTERVAL`` seconds, past the
  breaker's back-off, so it runs as soon as Redis answers again, request or
  not.
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
import re
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.core.cache import caches
from redis.cluster import RedisCluster
from redis.exceptions import ClusterDownError, OutOfMemoryError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError  # not the builtin

from . import metrics, serveridentity
from .logfields import AtMostEvery
from .serveridentity import Client, Connection, configured_for_cluster, is_cluster, register_adopt

__all__ = [
    "CacheUnavailable",
    "Client",
    "Connection",
    "breaker_open",
    "check_servers_again",
    "client",
    "configured_for_cluster",
    "describe",
    "is_cluster",
    "last_failure",
    "make_key",
    "need_resync",
    "probe_if_down",
    "register_adopt",
    "register_first_use",
    "register_resync",
    "reset",
    "resync_epoch",
    "run",
    "status",
    "trip",
    "wrote",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# While a resync is pending, how often the probe tries Redis (seconds). Each
# try costs at most one socket timeout, so a Redis that answers again is
# resynced within about this plus one timeout.
_PROBE_INTERVAL = 0.1
# How long run(patience=...) waits before trying again after a timeout.
_PATIENT_PAUSE = 0.05
# The patience of the commands' bulk operations (warm-up, clear, info), in seconds.
BULK_PATIENCE = 5.0


class CacheUnavailable(Exception):
    """Redis did not answer in time, or the circuit breaker is open."""


class _ResyncNotDone(CacheUnavailable):
    """Another thread's resync failed, or outlasted one socket timeout of waiting for it."""


def client() -> Client:
    """Return the redis-py client of the default (django-redis) cache, identity check installed."""
    redis_client = caches["default"].client.get_client(write=True)
    if serveridentity.install(redis_client):
        _first_use(redis_client)  # a new client (a settings change in tests)
    elif not _first_use_seen:
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


def make_key(suffix: str) -> str:
    """Return ``suffix`` with the cache's KEY_PREFIX and version, as Django builds keys."""
    return caches["default"].make_key(suffix)


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
        self._quiet = False  # its start was not logged (nor will its end be)
        # On a cluster with one master down, the others' answers close the
        # breaker and the next command for the dead one opens it again: one
        # outage, not many. So there the log says it ended only once the
        # cluster has answered for a back-off (one server's answer is news).
        self._said_down = False  # "unavailable" was logged, "answering again" not yet
        self._answering_since = 0.0  # a cluster: when the breaker closed after an outage it logged
        # Redis answered "OOM" (full, with maxmemory-policy noeviction): it still
        # answers reads, deletes and PING, so only a write closes the breaker.
        self._full = False
        self.last_failure: BaseException | None = None  # what opened it last (a command's message)
        # A resync runs in one thread at a time, and the others' commands wait
        # for it: until its deletes are done, Redis may still hold what a
        # missed invalidation was for. It stays needed until one succeeds.
        self._resync_needed = False
        self._resync_asked = 0  # need_resync() calls: one asked during a resync is not cleared by it
        self._resync_failures = 0
        # Changes when a resync becomes needed and when one succeeds: a copy
        # kept outside Redis (the near cache) is dropped at each change.
        self.resync_epoch = 0
        self._resync_lock = threading.Lock()
        self._probe: threading.Thread | None = None

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self, exc: BaseException) -> None:
        full = isinstance(exc, OutOfMemoryError)
        self.last_failure = exc
        with self._lock:
            self._open_until = time.monotonic() + settings.PRODUCT_CACHE_BACKOFF
            first = not self._down
            self._down = True
            self._answering_since = 0.0
            if full:
                self._full = True
        if first:
            metrics.breaker_state(True)
        if first or (self._quiet and not full):
            # Memory at the limit passes some writes and refuses others: such
            # outages start and end about once a back-off. Said once a minute;
            # one that turns into another failure is said then.
            news = not first or not self._said_down
            self._quiet = full and not _full_news.due()
            if not self._quiet and news:
                self._said_down = True
                logger.warning(
                    "Redis unavailable (%s: %s); products are read from the database, and Redis is tried again every %.1fs",
                    type(exc).__name__,
                    describe(exc),
                    settings.PRODUCT_CACHE_BACKOFF,
                )
        if full:
            return  # an answer: the sockets are fine
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
            if self._full:
                # A full Redis still takes a DEL or a PING; closing on those
                # would re-open on the next read's lease, many times a second.
                # A write that succeeds closes it (wrote(): a read's lease, a
                # fill, a throttle count; the probe's _check_serving).
                return
            with self._lock:
                was_down, self._down, self._open_until = self._down, False, 0.0
                if was_down and self._said_down and configured_for_cluster():
                    self._answering_since = time.monotonic()
            if was_down:
                metrics.breaker_state(False)
                if not self._answering_since:
                    self._said_back()
        elif (
            self._answering_since
            and time.monotonic() - self._answering_since >= settings.PRODUCT_CACHE_BACKOFF
        ):
            self._said_back()

    def _said_back(self) -> None:
        with self._lock:
            said, self._said_down, self._answering_since = self._said_down, False, 0.0
        if said:
            logger.warning("Redis is answering again; product caching resumed")

    def writable(self) -> None:
        """Close the breaker a refused write (OOM) held open: Redis just took a write."""
        with self._lock:
            self._full = False
        self.succeeded()

    def need_resync(self) -> None:
        """Remember that Redis may hold stale values, and start the probe."""
        with self._lock:
            self._resync_needed = True
            self._resync_asked += 1
            self.resync_epoch += 1
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

    def resync_first(self, redis_client: Client) -> None:
        """Run the registered resync when one is needed; another thread's command waits for it to end.

        Raise RedisError when it fails (it stays needed, and the probe tries
        again), and _ResyncNotDone when the one waited for failed (Redis just
        cost that thread a timeout: a write pays one, not two) or is still
        running after one socket timeout (a resync can take several: the
        caller reads the database meanwhile).
        """
        if not self._resync_needed or _resync is None:
            return  # the usual case: no lock on every Redis call
        failures = self._resync_failures
        if not self._resync_lock.acquire(timeout=settings.REDIS_SOCKET_TIMEOUT):
            raise _ResyncNotDone("another thread's resync is still running")
        try:
            with self._lock:
                if not self._resync_needed:
                    return  # the thread waited for did it
                if self._resync_failures != failures:
                    raise _ResyncNotDone("the resync another thread ran failed")
                asked = self._resync_asked
            try:
                _resync(redis_client)
            except RedisError:
                self._resync_failures += 1
                self.need_resync()  # a probe to try again (a forked worker has none yet)
                raise
            with self._lock:
                if self._resync_asked == asked:
                    self._resync_needed = False
                    self.resync_epoch += 1
        finally:
            self._resync_lock.release()


_breaker = _Breaker()
_full_news = AtMostEvery(60.0)  # outages for want of memory: logged once a minute


_SENTINEL_FAILURE = re.compile(r"> - (\w+:\w+)")


def _first_sentinel_error() -> str:
    """Ping the first configured sentinel as the service reaches it; return the error (one line)."""
    import redis

    options = settings.CACHES["default"]["OPTIONS"]
    (host, port), *_ = options["SENTINELS"]
    client = redis.Redis(host=host, port=port, **(options.get("SENTINEL_KWARGS") or {}))
    try:
        client.ping()
    except redis.RedisError as exc:
        return (str(exc).splitlines() or [type(exc).__name__])[0]
    finally:
        client.close()  # its own pool: no socket left open for the collector
    return "nothing now (it answers)"


def describe(exc: BaseException) -> str:
    """Return the failure in one short line (redis-py's Sentinel errors append the whole client's repr)."""
    text, _, errors = str(exc).partition(" : <redis.")
    text = text.strip()
    if type(exc).__name__ == "MasterNotFoundError":
        # redis-py 8 lists each sentinel that failed by its client's repr and
        # the error's kind only ("<redis.client.Redis(...)> - network:ConnectionError").
        # Credentials a sentinel refused say most, wherever it is listed (the
        # first may just be down). A refused connection or TLS handshake is
        # quick to meet again: ask the first sentinel once more, for the
        # message that says which.
        kinds = _SENTINEL_FAILURE.findall(errors)
        refused = next((kind for kind in kinds if kind.startswith("auth:")), None)
        cause = ""
        if refused:
            cause = f"; a sentinel refused the credentials: {refused.split(':')[1]}"
        elif kinds and kinds[0] == "network:ConnectionError":
            cause = f"; the first sentinel failed with: {_first_sentinel_error()}"
        elif kinds:
            cause = f"; the first sentinel failed with: {kinds[0].split(':')[1]}"
        text += (
            " (no sentinel answered with that master: check REDIS_SENTINEL_MASTER, REDIS_SENTINEL_USERNAME, "
            f"REDIS_SENTINEL_PASSWORD, REDIS_SENTINEL_TLS and that the sentinels are reachable{cause})"
        )
    return text if len(text) <= 400 else text[:400] + "..."


def _after_fork_in_child() -> None:
    # A lock another thread held at the fork (the master's outbox applier or
    # probe, mid-adoption) would stay held forever in the child: new ones.
    global _first_use_seen
    _first_use_seen = False  # the parent's watcher threads did not follow the fork
    _breaker._lock = threading.Lock()
    _breaker._resync_lock = threading.Lock()
    _breaker._probe = None  # the thread did not follow the fork; the next need_resync() starts one
    # An outage the parent saw is the child's to find again (a pending resync
    # stays): its first failure logs and sets the breaker gauge for this
    # process, which a gunicorn worker forked mid-outage would otherwise never do.
    # Conservatively, a resync first too (it delivers what the parent left
    # pending, and nothing else; a resync the parent was running at the fork
    # left the flag set anyway).
    if _breaker._down:
        _breaker._resync_needed = True
    _breaker._down, _breaker._open_until, _breaker._full = False, 0.0, False
    _breaker._said_down, _breaker._answering_since = False, 0.0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run(
    op: Callable[[Client], T], *, force: bool = False, patience: float = 0.0, deletes_only: bool = False
) -> T:
    """Run one Redis operation under the breaker; raise CacheUnavailable.

    ``force`` tries Redis even while the breaker is open: an invalidation must
    never be skipped because of an earlier failure, and a success closes the
    breaker. ``deletes_only``: ``op`` only deletes or retires, so it need not
    wait for a pending resync (whose deletes it cannot undo, in whichever
    order the two arrive). On a cluster with a master down, the resync fails
    until that master is back; an invalidation held behind it would miss the
    masters that answer, and other processes would go on reading there what
    the write replaced. ``patience`` (seconds; the bulk operations of the manage.py
    commands) runs ``op`` again after a socket timeout until that long has
    passed: a busy Redis or machine can miss the short timeout meant for
    requests now and then, and an operator's warm-up should not fail for it.
    ``op`` must then be safe to run again. A refused connection fails at once.
    """
    if not force and _breaker.is_open:
        raise CacheUnavailable("circuit open")
    give_up_at = time.monotonic() + patience
    while True:
        try:
            redis_client = client()
            if not deletes_only:
                _breaker.resync_first(redis_client)
            result = op(redis_client)
        except RedisError as exc:
            _breaker.trip(exc)
            if isinstance(exc, RedisTimeoutError) and time.monotonic() < give_up_at:
                time.sleep(_PATIENT_PAUSE)
                continue
            raise CacheUnavailable(str(exc)) from exc
        except _ResyncNotDone:
            if time.monotonic() < give_up_at:  # as a timeout: patience waits it out
                time.sleep(_PATIENT_PAUSE)
                continue
            raise
        _breaker.succeeded()
        return result


def check_servers_again() -> None:
    """Check the server behind this process's connections again, now (another process switched servers).

    Idle connections close and one new connection runs the identity check
    at once; a connection in use carries on, which is safe: the check's
    retirements are the server's, seen through any connection.
    """
    serveridentity.forget()
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


WRITE_CHECK_KEY = "writable"


def _check_serving(redis_client: Client) -> None:
    """PING; on a Cluster, ask whether the cluster serves every slot, then PING every master.

    After Redis refused a write for want of memory, also write one short-lived
    key: a full Redis answers PING.

    A cluster node answers PING while its cluster is down (a master and its
    replicas lost: every command gets CLUSTERDOWN), so PING alone would call
    such a cluster up: /health/ would say "ok" and the probe "caching resumed".
    And the cluster says "ok" for ``cluster-node-timeout`` (15 s by default)
    after a master stops answering: the masters are asked themselves.
    """
    if _breaker._full:
        # Refused with OOM while Redis is still full (any write would do; this
        # key expires at once, and no product key is touched). On a cluster it
        # checks one master only: docs/cache.md says what that leaves.
        redis_client.set(make_key(WRITE_CHECK_KEY), b"1", px=1000)
        _breaker.writable()
    if not configured_for_cluster():
        redis_client.ping()
        return
    state = redis_client.cluster_info(target_nodes=RedisCluster.DEFAULT_NODE).get("cluster_state")
    if state != "ok":
        raise ClusterDownError(f"the cluster's state is {state!r}: not every slot is served")
    # Through the cluster client, not a node's own connection: a master that
    # fails makes redis-py read the slot map again, so after a failover the
    # next check asks the promoted replica.
    redis_client.ping(target_nodes=RedisCluster.PRIMARIES)


def last_failure() -> BaseException | None:
    """Return the Redis error that opened the breaker last (None if it never opened in this process)."""
    return _breaker.last_failure


def resync_epoch() -> int:
    """Return a number that changes when this process comes to owe Redis an invalidation, and when it has paid.

    Meanwhile Redis may still hold values this process's writes replaced,
    and a change message for them comes only with the resync's delete: a
    copy kept outside Redis (the near cache) is dropped at each change.
    """
    return _breaker.resync_epoch


def breaker_open() -> bool:
    """Return True while the breaker skips Redis (a failure less than PRODUCT_CACHE_BACKOFF ago)."""
    return _breaker.is_open


def wrote() -> None:
    """Note that Redis just took a write: one that refused writes for want of memory takes them again."""
    if _breaker._full:
        _breaker.writable()


def trip(exc: BaseException) -> None:
    """Open the breaker for a failure met outside :func:`run` (the near cache's own connections)."""
    _breaker.trip(exc)


def need_resync() -> None:
    """Make the registered resync run before the next command (the probe retries it)."""
    _breaker.need_resync()


def status(*, patience: float = 0.0) -> str:
    """Return "ok" when Redis answers a PING now (a Cluster: every slot served, every master answering), else "down".

    ``patience``: as :func:`run`'s (a command about to start bulk work).
    """
    try:
        run(_check_serving, patience=patience)
    except CacheUnavailable:
        return "down"
    return "ok"


def reset() -> None:
    """Forget any outage, pending resync and checked server this process saw (for tests)."""
    _breaker.__init__()
    _full_news.reset()
    serveridentity.forget()
