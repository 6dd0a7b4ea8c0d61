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
from redis.connection import parse_url
from redis.exceptions import ConnectionError, RedisClusterException
from redis.retry import Retry


class ClusterUnavailable(ConnectionError):
    """The cluster cannot serve the command now (no node reachable, slots not covered)."""


class _CachePipeline(ClusterPipeline):
    def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            return super().execute(raise_on_error)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc


class CacheRedisCluster(RedisCluster):
    """``RedisCluster`` whose failures are all ``RedisError``."""

    def execute_command(self, *args, **kwargs):
        try:
            return super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc

    def pipeline(self, transaction=None, shard_hint=None):
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
            kwargs["ssl"] = True
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
