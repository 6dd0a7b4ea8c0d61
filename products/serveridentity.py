"""Server identity: a new Redis connection asks its server who it is before it carries anything.

A restart or a failover shows a new ``run_id`` (on a cluster also a new
replication id, see :func:`_server_identity`). On a connection to a server
instance this process has not checked, the function the cache policy
registered (``register_adopt``: products.cachekeys.adopt) runs inside
``connect()``, before any reply from that server can reach a caller.
Part of :mod:`products.transport`, which installs the check on its clients.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError, TimeoutError

Client = Any  # redis.Redis, or redis.cluster.RedisCluster
Connection = Any  # redis.connection.AbstractConnection


def is_cluster(redis_client: Client) -> bool:
    return isinstance(redis_client, RedisCluster)


def configured_for_cluster() -> bool:
    """Return True when the settings point the cache at a Redis Cluster (no client needed)."""
    return settings.REDIS_TOPOLOGY.kind == "cluster"


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
    """Return the server instance behind ``connection``: its run_id, and on a cluster its replication id.

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
    version = fields.get("redis_version", "")
    if version.split(".")[0].isdigit() and int(version.split(".")[0]) < 7:
        # The read scripts' "#!lua" line (lua/read.lua) is Redis 7's: an
        # older server would fail every read with a compile error instead.
        raise ConnectionError(f"Redis {version} is older than 7.0, which the product cache needs")
    run_id, replid = fields.get("run_id", ""), fields.get("master_replid", "")
    return f"{run_id}.{replid[:16]}" if replid else run_id


def forget() -> None:
    """Check every server again on its next new connection (a restart, tests)."""
    _known_servers.clear()


def install(redis_client: Client) -> bool:
    """Make every new connection of ``redis_client`` check its server first; True when newly installed."""
    # django-redis builds a client per thread around one pool per process
    # (one RedisCluster per process): the check goes on what they share.
    shared = redis_client if is_cluster(redis_client) else redis_client.connection_pool
    if getattr(shared, "_products_checks_server", False):
        return False
    with _adopt_lock:  # two threads' first calls must not wrap the hook twice
        if getattr(shared, "_products_checks_server", False):
            return False
        _install_server_check(redis_client)
        shared._products_checks_server = True
        return True


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


def _after_fork_in_child() -> None:
    # A lock another thread held at the fork (the master's outbox applier or
    # probe, mid-adoption) would stay held forever in the child: new ones.
    global _adopt_lock, _adopting
    _adopt_lock = threading.Lock()
    _adopting = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
