"""A Redis Cluster client for django-redis, on top of redis-py's ``RedisCluster``.

django-redis has none (its issues #208 and #710). The configuration
(productsite.redis_config) names both hooks::

    "CLIENT_CLASS": "productsite.redis_cluster.ClusterClient",
    "CONNECTION_FACTORY": "productsite.redis_cluster.ClusterConnectionFactory",
    "CLUSTER_NODES": [(host, port), ...],   # any subset of the cluster

``get_client()`` returns one process-wide :class:`CacheRedisCluster`, so
products.cache runs its scripts through it: each script is sent to the
master that owns its keys' slot, and ``MOVED``/``ASK`` redirections are
followed inside redis-py. What this adds to ``RedisCluster``:

* the same short socket timeouts as one server, and no retries of a failed
  command: products.cache's circuit breaker decides what a failure means;
* every failure is a ``RedisError``: redis-py raises some cluster failures
  (no node reachable at start, slots not covered during a failover) as plain
  ``Exception`` subclasses, which would escape the cache's handling as a 500;
* multi-key reads and writes of Django's cache API split per slot.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django_redis.client.default import DefaultClient
from django_redis.pool import ConnectionFactory
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.commands import RedisClusterCommands
from redis.connection import parse_url
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    RedisClusterException,
    RedisError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry

from . import redis_config


class ClusterUnavailable(ConnectionError):
    """The cluster cannot serve the command now (no node reachable, slots not covered)."""


# Commands the direct route sends itself: the key is args[1] (args[3] for
# scripts). The cache's hot path is made of these.
_SINGLE_KEY = frozenset({"GET", "SET", "INCR", "INCRBY", "EXPIRE", "PEXPIRE", "TTL", "GETRANGE"})
_SCRIPTS = frozenset({"EVALSHA", "EVAL"})
# Replies that mean "not executed here, ask elsewhere": redis-py's full path
# follows them (and refreshes its slot map), so the command is sent again there.
_REDIRECTED = (MovedError, AskError, TryAgainError, ClusterDownError)


def _routing_key(args: tuple) -> Any:
    command = args[0].upper() if isinstance(args[0], str) else args[0]
    if command in _SCRIPTS:
        return args[3] if len(args) > 3 and int(args[2]) > 0 else None
    if command in _SINGLE_KEY and len(args) > 1:
        return args[1]
    if command == "DEL" and len(args) == 2:  # products.cachekeys.delete on a cluster
        return args[1]
    return None


class _CachePipeline(ClusterPipeline):
    def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            return super().execute(raise_on_error)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc


class _SlotPipeline(RedisClusterCommands):
    """A non-transactional pipeline that runs as one plain pipeline when it can.

    When every queued command is single-key and all keys share one slot (the
    throttle counter's INCR + EXPIRE on every request), the queue goes to
    that slot's master as a plain pipeline; otherwise through redis-py's
    ClusterPipeline, which costs about three times the CPU (it copies its
    command tables on creation and resolves a policy per command).
    """

    def __init__(self, cluster: CacheRedisCluster) -> None:
        self._cluster = cluster
        self._queue: list[tuple[tuple, dict]] = []

    def execute_command(self, *args, **options) -> _SlotPipeline:
        self._queue.append((args, options))
        return self

    def __len__(self) -> int:
        return len(self._queue)

    def __enter__(self) -> _SlotPipeline:
        return self

    def __exit__(self, *exc_info) -> None:
        self.reset()

    def reset(self) -> None:
        self._queue = []

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        queue, self._queue = self._queue, []
        if not queue:
            return []
        try:
            replies = self._on_one_node(queue, raise_on_error)
            if replies is not None:
                return replies
            pipe = self._cluster.pipeline(full=True)
            for args, options in queue:
                pipe.execute_command(*args, **options)
            return pipe.execute(raise_on_error)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc

    def _on_one_node(self, queue: list, raise_on_error: bool) -> list[Any] | None:
        keys = [_routing_key(args) for args, _ in queue]
        if None in keys:
            return None
        slots = {self._cluster.keyslot(key) for key in keys}
        if len(slots) != 1:
            return None
        nodes_manager = self._cluster.nodes_manager
        node = nodes_manager.get_node_from_slot(slots.pop())
        if node.redis_connection is None:
            return None
        pipe = node.redis_connection.pipeline(transaction=False)
        for args, options in queue:
            pipe.execute_command(*args, **options)
        try:
            return pipe.execute(raise_on_error)
        except _REDIRECTED:
            return None  # nothing ran; ClusterPipeline follows the redirection
        except (ConnectionError, TimeoutError):
            _forget_node(nodes_manager, node)
            raise


def _forget_node(nodes_manager, node) -> None:
    # As redis-py does after a connection error: try that node last and
    # re-read the slot map, so a failed-over master is not asked again.
    try:
        nodes_manager.move_node_to_end_of_cached_nodes(node.name)
        nodes_manager.initialize(last_failed_node_name=node.name)
    except (RedisClusterException, RedisError):
        pass  # the map is refreshed on the next failure or MOVED


class CacheRedisCluster(RedisCluster):
    """``RedisCluster`` whose failures are all ``RedisError``, with a direct route for single-slot commands."""

    # Tries per command: enough for a MOVED, then an ASK, then the answer.
    # redis-py's 16 made a TRYAGAIN (a script on a slot being migrated) wait
    # in 50 ms sleeps for most of a second before the read went to the database.
    RedisClusterRequestTTL = 4

    def execute_command(self, *args, **kwargs):
        try:
            key = None if kwargs else _routing_key(args)
            if key is not None:
                replied, reply = self._execute_direct(key, args)
                if replied:
                    return reply
            return super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc

    def _execute_direct(self, key: Any, args: tuple) -> tuple[bool, Any]:
        """Send a single-slot command straight to the slot's master.

        redis-py's full path resolves command policies and records metrics
        on every call, about half the CPU of a cached hit. Returns (False,
        None) for anything unusual (a redirection, no connection yet), and
        the full path sends the command instead.
        """
        node = self.nodes_manager.get_node_from_slot(self.keyslot(key))
        redis_node = node.redis_connection
        if redis_node is None:
            return False, None
        pool = redis_node.connection_pool
        connection = None
        try:
            connection = pool.get_connection()  # connects: may fail too
            connection.send_command(*args)
            return True, redis_node.parse_response(connection, args[0])
        except _REDIRECTED:
            return False, None
        except (ConnectionError, TimeoutError):
            if connection is not None:
                connection.disconnect()
            _forget_node(self.nodes_manager, node)
            raise
        finally:
            if connection is not None:
                pool.release(connection)

    def command(self, **kwargs):
        """``COMMAND``, asked of another node when the default one does not answer.

        redis-py builds its command table with it while the client is built,
        from its default node: the master of slot 0. With that master down
        (before a failover replaces it), a process starting then could reach
        no master at all, healthy ones included: its writes' invalidations
        went to the outbox and other processes served the old value meanwhile
        (a review: up to 0.4 s). Every node knows the same commands.
        """
        tried: set[str] = set()
        for _ in range(len(self.get_nodes())):  # each node once at most
            node = self.get_default_node()
            try:
                return super().command(**kwargs)
            except (ConnectionError, TimeoutError):
                tried.add(node.name)
                others = [n for n in self.get_primaries() + self.get_replicas() if n.name not in tried]
                if not others:
                    raise
                self.replace_default_node(others[0])
        return super().command(**kwargs)

    def pipeline(self, transaction=None, shard_hint=None, full: bool = False):
        if not transaction and not shard_hint and not full:
            return _SlotPipeline(self)
        pipe = super().pipeline(transaction, shard_hint)
        pipe.__class__ = _CachePipeline
        return pipe


class ClusterConnectionFactory(ConnectionFactory):
    """Build one ``CacheRedisCluster`` per configuration and process (as django-redis pools)."""

    _clusters: dict[tuple, CacheRedisCluster] = {}
    _lock = threading.Lock()

    def connect(self, url: str) -> CacheRedisCluster:
        nodes = tuple(tuple(node) for node in self.options.get("CLUSTER_NODES") or ())
        if not nodes:
            raise ImproperlyConfigured("CLUSTER_NODES must list the cluster's nodes as (host, port).")
        key = (url, nodes)
        with self._lock:
            cluster = self._clusters.get(key)
            if cluster is None:
                cluster = self._clusters[key] = self._new_cluster(url, nodes)
        return cluster

    def _new_cluster(self, url: str, nodes: tuple) -> CacheRedisCluster:
        params = parse_url(url)  # credentials and TLS; the host is one of the nodes
        kwargs: dict[str, Any] = {
            key: params[key] for key in ("username", "password") if params.get(key) is not None
        }
        if params.get("connection_class") is not None and "SSL" in params["connection_class"].__name__:
            # ssl=True and the URL's CA and client certificate, for every node.
            kwargs.update(ssl=True, **redis_config.tls_options(url))
        timeout = self.options.get("SOCKET_TIMEOUT")
        connect_timeout = self.options.get("SOCKET_CONNECT_TIMEOUT")
        pool_kwargs = {k: v for k, v in self.pool_cls_kwargs.items() if k != "retry"}
        try:
            return CacheRedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in nodes],
                # The whole command is tried once; a dead master costs one
                # timeout, after which the slot map is refreshed.
                retry=Retry(NoBackoff(), 0),
                socket_timeout=timeout,
                socket_connect_timeout=connect_timeout,
                **pool_kwargs,
                **kwargs,
            )
        except RedisClusterException as exc:
            raise ClusterUnavailable(f"no cluster node answered: {exc}") from exc

    def disconnect(self, connection: RedisCluster) -> None:
        connection.disconnect_connection_pools()


class ClusterClient(DefaultClient):
    """django-redis client whose connection is a whole Redis Cluster."""

    def connect(self, index: int = 0) -> CacheRedisCluster:
        cluster = super().connect(index)
        if not isinstance(cluster, RedisCluster):
            raise ImproperlyConfigured(
                "ClusterClient needs CONNECTION_FACTORY='productsite.redis_cluster.ClusterConnectionFactory'."
            )
        return cluster

    def get_many(self, keys, version=None, client=None) -> dict:
        # MGET across slots is refused by the cluster; redis-py splits it.
        client = client or self.get_client(write=False)
        map_keys = {self.make_key(k, version=version): k for k in keys}
        if not map_keys:
            return {}
        values = client.mget_nonatomic(list(map_keys))
        return {map_keys[k]: self.decode(v) for k, v in zip(map_keys, values, strict=True) if v is not None}
