"""Leave a Sentinel master the moment the sentinels switch away from it.

A pooled connection stays with the server it connected to. After a manual
``SENTINEL FAILOVER`` (or a failover while the old master was only cut off)
the old master keeps answering as a master until the sentinels turn it into
a replica, about 10 s later. Processes connected before the switch would
read and invalidate there, processes that connect after it use the new
master, and each would serve values the other's writes replaced.

So each process that uses a Sentinel master listens to every sentinel's
``+switch-master``, and asks them for the master every second in case a
message was missed. When the master the sentinels name is not the one this
process's pool connects to:

1. the pool takes the new address (idle connections close; busy ones close
   when they are released), and the near cache drops its tracked connection;
2. a new connection checks the new server (:mod:`products.transport`: its
   ``run_id`` is adopted, with the ledger's epoch);
3. the cache generation is retired on the new master: invalidations this
   process sent to the old master after the switch, before it heard of it,
   did not reach the new one.

The window left is the time a ``+switch-master`` takes to reach the process
(milliseconds on one network): docs/cache.md, "Sentinel".

A sentinel that refuses the subscription (an ACL user without the
``+switch-master`` channel: ``NOPERM``) is said in the log at most every ten
minutes and asked again after a minute; meanwhile the checks every second
are what move the process, up to a second late.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from django.db import connections
from redis.exceptions import RedisError, ResponseError
from redis.sentinel import SentinelConnectionPool

from . import cache, nearcache, transport
from .logfields import AtMostEvery

logger = logging.getLogger("products.cache")

CHECK_EVERY = 1.0  # seconds between asking the sentinels, messages or not
_LISTEN = 0.05  # seconds each sentinel's subscription is waited on per turn
# After a +switch-master, how long and how often to ask again: the sentinel
# asked first may name the old master until the others' hellos reach it.
_AFTER_MESSAGE = 3.0
_AFTER_MESSAGE_EVERY = 0.1
# A sentinel that refused the subscription is asked again after this long
# (seconds), and said in the log at most this often.
_SUBSCRIBE_AGAIN_AFTER = 60.0
_refusals = AtMostEvery(600.0)

_lock = threading.Lock()
_thread: threading.Thread | None = None
# The master this process last moved to (or first saw). Not the pool's own
# master_address: any thread's new connection updates that one too, and the
# watcher must still act when another thread noticed the switch first.
_acted_on: tuple | None = None


def watch(redis_client) -> None:
    """Start this process's watcher if ``redis_client`` reaches its master through Sentinel."""
    global _thread
    pool = getattr(redis_client, "connection_pool", None)
    if not isinstance(pool, SentinelConnectionPool):
        return
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        _thread = threading.Thread(target=_watch_forever, args=(pool,), name="sentinel-watch", daemon=True)
        _thread.start()


def check(pool: SentinelConnectionPool) -> bool:
    """Ask the sentinels for the master; move there if it moved. Return True when it moved."""
    global _acted_on
    before = _acted_on or pool.master_address
    try:
        now = pool.get_master_address()  # closes idle connections when it changed
    except RedisError:
        return False  # no sentinel answers: the data connections fail on their own
    _acted_on = now
    if before is None or now == before:
        return False
    logger.warning(
        "Sentinel switched the master from %s:%s to %s:%s; moving this process's connections "
        "and retiring the cached products",
        *before,
        *now,
    )
    nearcache.reset()
    transport.check_servers_again()
    cache.retire_generation()
    return True


def _watch_forever(pool: SentinelConnectionPool) -> None:
    subscriptions: list = []
    checked = 0.0
    eager_until = 0.0  # after a message: ask every _AFTER_MESSAGE_EVERY until then
    subscribe_again_at = 0.0  # a sentinel refused: every subscription is made again then
    while True:
        try:
            if subscribe_again_at and time.monotonic() >= subscribe_again_at:
                _close(subscriptions)
                subscriptions, subscribe_again_at = [], 0.0
            if not subscriptions and not subscribe_again_at:
                subscriptions = _subscribe(pool)
            now = time.monotonic()
            every = _AFTER_MESSAGE_EVERY if now < eager_until else CHECK_EVERY
            if now - checked >= every:
                checked = now
                if _checked_here(pool):
                    eager_until = 0.0
            if not subscriptions:
                time.sleep(every)
                continue
            for subscription in list(subscriptions):
                try:
                    message = subscription.get_message(timeout=_LISTEN)
                except ResponseError as exc:
                    # Refused, not lost: subscribing again at once would
                    # reconnect to every sentinel each _LISTEN, in silence.
                    _refused(subscription, exc)
                    subscriptions.remove(subscription)
                    subscription.close()
                    subscribe_again_at = time.monotonic() + _SUBSCRIBE_AGAIN_AFTER
                    continue
                if message and message.get("type") == "message" and _names(message, pool.service_name):
                    checked = time.monotonic()
                    eager_until = 0.0 if _checked_here(pool) else checked + _AFTER_MESSAGE
        except (RedisError, OSError):
            _close(subscriptions)
            subscriptions = []
            time.sleep(_LISTEN)
        except Exception:  # pragma: no cover - never let the watcher die noisily
            logger.exception("Sentinel watcher failed; retrying")
            _close(subscriptions)
            subscriptions = []
            time.sleep(CHECK_EVERY)


def _checked_here(pool: SentinelConnectionPool) -> bool:
    # A move adopts the new server, which reads the server ledger: this
    # thread's database connection is not a request's, so close it after.
    try:
        return check(pool)
    finally:
        connections.close_all()


def _subscribe(pool: SentinelConnectionPool) -> list:
    subscriptions = []
    for sentinel in pool.sentinel_manager.sentinels:
        subscription = sentinel.pubsub(ignore_subscribe_messages=True)
        try:
            subscription.subscribe("+switch-master")
        except (RedisError, OSError):
            subscription.close()  # this one is down; the others and the checks still work
            continue
        subscriptions.append(subscription)
    return subscriptions


def _refused(subscription, exc: ResponseError) -> None:
    if not _refusals.due():
        return
    kwargs = subscription.connection_pool.connection_kwargs if subscription.connection_pool else {}
    logger.warning(
        "Sentinel %s:%s refused the subscription to +switch-master (%s); this process checks the master "
        "every %.0fs instead, so it may follow a failover up to that late. Grant the user of "
        "REDIS_SENTINEL_USERNAME the channel (ACL: &+switch-master, or allchannels)",
        kwargs.get("host", "?"),
        kwargs.get("port", "?"),
        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        CHECK_EVERY,
    )


def _names(message: dict, service: str) -> bool:
    # "<master name> <old ip> <old port> <new ip> <new port>"
    data = message.get("data")
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return isinstance(data, str) and data.split(" ", 1)[0] == service


def _close(subscriptions: list) -> None:
    for subscription in subscriptions:
        try:
            subscription.close()
        except Exception:  # pragma: no cover - best effort
            pass


def _after_fork_in_child() -> None:
    global _lock, _thread
    _lock = threading.Lock()
    _thread = None  # the thread did not follow the fork; the next watch() starts one


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
