"""Where the product cache lives in Redis: buckets, hash tags, generations.

One scheme for a single Redis, Sentinel and Redis Cluster. Each product
belongs to one of ``BUCKETS`` buckets (CRC-32 of its name); a bucket's keys
share the hash tag ``{bN}``, so they live in one slot and every script
touches one slot, while the 256 buckets spread the products over all
masters. Every key also carries the cache's ``KEY_PREFIX`` and version::

    products:v2:{bN}:gen          bucket N's generation, a random token
    products:v2:{bN}:srv          the server instance it was adopted on (run_id; on a cluster, and replication id)
    products:v2:{bN}:p:<name>     "<gen>\\n<JSON bytes>" (plain data, never pickles)
    products:v2:{bN}:l:<name>     the fill lease, "<gen>:<token>"
    products:v2:throttle:<counter>:<window number>   throttle counters (products.counters);
                                  failed sign-ins count under ``throttle:authfail:...`` (products.auth_limits)
    {products-auth}:auth:v1:gen   the cached token authentications' generation (and ``:srv``)
    {products-auth}:auth:v1:t:<digest>   one token's cached authentication (products.token_cache)
    writable                      (KEY_PREFIX and version only) transport's write check after an OOM, 1 s

A value or lease counts only while its bucket's generation is the one it
carries (the scripts in ``lua/`` compare), so *retiring* a generation (a new
token) makes the bucket's older values unreachable at once. Invalidating a
name needs no generation: it deletes the value and lease keys.

The one script that spans slots is ``count+read`` (a throttle counter and a
product's keys, one round trip for a cached hit): products.cache runs it on
one server only, where slots do not matter; on a cluster the count and the
read are two calls. Co-locating counters with products would have made the
limit per bucket instead of per client.

:func:`clear` and :func:`info` walk every master of a cluster.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import zlib
from collections.abc import Callable, Iterable
from typing import NamedTuple

from redis.exceptions import AskError, ConnectionError, MovedError, RedisError, ResponseError

from . import metrics, scripts, transport
from .transport import Client, Connection

logger = logging.getLogger("products.cache")

KEY_VERSION = "products:v2"  # bump when the cached shape or the key scheme changes
BUCKETS = 256  # changing it moves products between buckets: bump KEY_VERSION


class ProductKeys(NamedTuple):
    gen: str  # the generation of the product's bucket
    value: str
    lease: str


def key(suffix: str) -> str:
    """Return a key of this cache outside the buckets (``products:v2:<suffix>``)."""
    return transport.make_key(f"{KEY_VERSION}:{suffix}")


# Failed sign-in counters are throttle counters named with this prefix;
# clear() leaves them alone unless asked.
SIGN_IN_COUNTERS = "authfail:"


def throttle_key(counter: str, window_no: int) -> str:
    """Return the key of ``counter``'s fixed window number ``window_no``."""
    return key(f"throttle:{counter}:{window_no}")


def bucket_prefix(bucket: int) -> str:
    """Return the full key prefix of a bucket, ending with ":"."""
    # Built once per bucket: Django's make_key (the cache's KEY_PREFIX and
    # version) cost more than the rest of a read's key names.
    prefix = _prefixes.get(bucket)
    if prefix is None:
        prefix = _prefixes[bucket] = key(f"{{b{bucket}}}:")
    return prefix


_prefixes: dict[int, str] = {}


def forget_key_prefixes_on_setting_change(setting: str, **kwargs) -> None:
    """Build the buckets' key prefixes again once the cache's KEY_PREFIX may have changed (tests)."""
    if setting == "CACHES":
        _prefixes.clear()


def bucket_of(name: str) -> int:
    return zlib.crc32(name.encode("utf-8", "surrogatepass")) % BUCKETS


def product_keys(name: str) -> ProductKeys:
    """Return the keys of ``name``'s bucket generation, value and fill lease."""
    prefix = bucket_prefix(bucket_of(name))
    return ProductKeys(prefix + "gen", prefix + "p:" + name, prefix + "l:" + name)


def new_generation() -> str:
    return secrets.token_hex(8)


class Undelivered(ConnectionError):
    """Some masters of a cluster did not take a retirement or a delete; ``names`` are the missed ones."""

    def __init__(self, message: str, names: list[str] | None) -> None:
        super().__init__(message)
        self.names = names  # None: the retirement (every product)


def retire_all(client: Client) -> None:
    """Give every bucket a new generation: one pipelined round trip on one server.

    On a cluster, bucket by bucket: a master that is down must not stop the
    others from retiring (their values would stay readable by every other
    process for the whole outage).
    """
    gen = new_generation()
    if not transport.is_cluster(client):
        pipe = client.pipeline(transaction=False)
        for bucket in range(BUCKETS):
            pipe.set(bucket_prefix(bucket) + "gen", gen)
        pipe.execute()
        metrics.generation_retired()
    else:
        failed, error = _each_bucket(
            client, range(BUCKETS), lambda b: client.set(bucket_prefix(b) + "gen", gen)
        )
        if error is not None:
            raise Undelivered(f"{len(failed)} bucket(s) not retired: {error}", None) from error
        metrics.generation_retired()
    # On purpose (an import, a data migration, clear_product_cache): news, not trouble.
    logger.info("Product cache generation retired; older cached products are unreachable")


def delete(client: Client, names: list[str]) -> None:
    """Delete the values and fill leases of ``names`` (whatever their generation).

    One DEL per 500 names on one server. On a cluster, one pipeline per
    bucket (one slot), so the names of the masters that answer are deleted
    even when another master is down (:class:`Undelivered` then names the
    others), of one DEL per key: while a slot migrates, a DEL of several
    keys of which some have moved is refused (``TRYAGAIN``) until the move
    ends, where a single key's DEL runs on the source or is redirected
    (``ASK``) to the target.
    """
    if not transport.is_cluster(client):
        for start in range(0, len(names), 500):
            client.delete(*(k for name in names[start : start + 500] for k in product_keys(name)[1:]))
        return
    by_bucket: dict[int, list[str]] = {}
    for name in names:
        by_bucket.setdefault(bucket_of(name), []).append(name)

    def delete_bucket(bucket: int) -> None:
        pipe = client.pipeline()
        for name in by_bucket[bucket]:
            for k in product_keys(name)[1:]:
                pipe.execute_command("DEL", k)
        pipe.execute()

    failed, error = _each_bucket(client, by_bucket, delete_bucket)
    if error is not None:
        raise Undelivered(str(error), [name for b in failed for name in by_bucket[b]]) from error


def delete_and_settle(client: Client, names: list[str], settling: bool) -> None:
    """:func:`delete`, then (``settling``) :func:`settle`: the same round trips, in the same order.

    On one server with at most 500 names (a create's, an update's) both go on
    one pooled connection (:func:`products.scripts.in_turn`: the PING is
    written only after the DEL's reply is read), without redis-py's per-call
    wrapping; otherwise the two functions run as they are.
    """
    if transport.is_cluster(client) or len(names) > 500:
        delete(client, names)
        if settling:
            settle(client, names)
        return
    commands = [("DEL", *(k for name in names for k in product_keys(name)[1:]))]
    if settling:
        commands.append(("PING",))
    scripts.in_turn(client, commands)


def settle(client: Client, names: list[str] | None) -> None:
    """Make one more round trip to every server that may have taken a write to ``names``.

    See products.cache's ``_settling``: after it, every client-tracking message
    the write caused has been written to its socket. On a cluster, every
    master is pinged: a write that followed an ``ASK`` ran on a master the
    slot map does not name yet. Only a failure of a master that owns one of
    ``names``' buckets (any master when ``names`` is None) counts; any other
    took no part in the write, or if it did and died since, its tracked
    connections dropped with it, and near caches flush on that.
    """
    if not transport.is_cluster(client):
        client.ping()
        return
    owners = None
    if names is not None:
        slots = {client.keyslot(bucket_prefix(b) + "gen") for b in {bucket_of(n) for n in names}}
        owners = {client.nodes_manager.get_node_from_slot(slot).name for slot in slots}
    for node in client.get_primaries():
        try:
            client.get_redis_connection(node).ping()
        except RedisError:
            if owners is None or node.name in owners:
                raise


def _each_bucket(
    client: Client, buckets: Iterable[int], command: Callable[[int], object]
) -> tuple[list[int], RedisError | None]:
    """Run ``command`` for every bucket of a cluster; return the buckets that failed and the last error.

    A master that did not answer (a timeout, a refused connection) is not
    asked again for its other buckets: they fail with it. Each would cost
    one more socket timeout on a hung master (a review measured 2.5 s for
    one write of 30 names at a 0.5 s timeout), and a write pays one.
    """
    failed: list[int] = []
    error: RedisError | None = None
    down: set[str] = set()
    for bucket in buckets:
        master = client.nodes_manager.get_node_from_slot(client.keyslot(bucket_prefix(bucket) + "gen")).name
        if master in down:
            failed.append(bucket)
            continue
        try:
            command(bucket)
        except RedisError as exc:
            failed.append(bucket)
            error = exc
            if not isinstance(exc, ResponseError):  # an answer (TRYAGAIN, CLUSTERDOWN) is not a dead master
                down.add(master)
    return failed, error


# (run_id, database number) -> what this deployment's buckets on that server
# are marked with (products.serverledger adds the epoch of the last switch of
# server; wired in apps.ready()). Unset: the run_id alone.
_server_marker: Callable[[str, int], str] | None = None


def register_server_marker(function: Callable[[str, int], str]) -> None:
    global _server_marker
    _server_marker = function


# The cached token authentications (products.token_cache): one hash tag, so
# their generation and entries share one Redis Cluster slot.
AUTH_TAG = "{products-auth}"


def auth_generation_key() -> str:
    """Return the key of the cached token authentications' generation."""
    return transport.make_key(f"{AUTH_TAG}:auth:v1:gen")


def auth_entry_key(digest: str) -> str:
    """Return the key of one token's cached authentication (``digest``: never the token)."""
    return transport.make_key(f"{AUTH_TAG}:auth:v1:t:{digest}")


def adopt(connection: Connection, run_id: str) -> None:
    """Retire the generation of every bucket on this server that another server instance set.

    transport runs it on a new connection to a server this process has not
    checked, before the connection serves anything: after a restart from a
    snapshot or a failover, the ``srv`` keys name the old run_id, so those
    buckets start afresh; on one Redis or Sentinel, so do the buckets of a
    server the cache left and came back to (the marker's epoch). On a
    cluster each master answers for its own buckets and refuses the others
    (MOVED); their masters' connections do them.
    """
    gen = new_generation()
    single = _server_marker is not None and not transport.is_cluster(transport.client())
    mark = _server_marker(run_id, int(getattr(connection, "db", 0) or 0)) if single else run_id
    calls = [([p + "gen", p + "srv"], [mark, gen]) for p in map(bucket_prefix, range(BUCKETS))]
    # The token authentications too, as one more bucket: a server restarted
    # from a snapshot, or a promoted replica, may hold an older generation.
    calls.append(([auth_generation_key(), transport.make_key(f"{AUTH_TAG}:auth:v1:srv")], [mark, gen]))
    *replies, auth_reply = scripts.eval_on_connection(connection, "adopt", calls)
    for reply in (*replies, auth_reply):
        if isinstance(reply, ResponseError) and not isinstance(reply, (MovedError, AskError)):
            # Refused for any reason but "another master's slot": a full
            # Redis (OOM), a cluster master back from a restart that answers
            # CLUSTERDOWN until the cluster agrees it is up, ... The server
            # is not checked, so a connection to it must not serve (what it
            # holds may be a snapshot's): it fails as an unreachable one
            # would, and the next connection checks again.
            raise reply
    retired = sum(1 for reply in replies if reply == 1)
    tokens = " (and the cached token authentications)" if auth_reply == 1 else ""
    if retired:
        metrics.generation_retired()
        logger.warning(
            "Redis server %s is new to this cache (a restart from old data, a failover, or the epoch "
            "another process recorded): %d bucket generation(s) retired%s",
            run_id,
            retired,
            tokens,
        )
    elif tokens:
        logger.info("Redis server %s held cached token authentications of another server: retired", run_id)
    elif any(reply == 2 for reply in replies):
        # No bucket marked by any server: a fresh or emptied Redis (a first
        # start, a restart without a snapshot), or one restored from a snapshot
        # taken after a FLUSHALL (values, no marks). Each bucket got a new
        # generation all the same, so nothing it holds is served.
        logger.info(
            "Redis server %s is new to this cache and holds no marks of it: every bucket starts a new generation",
            run_id,
        )


def scan_pattern(suffix: str = "") -> str:
    """Return a SCAN MATCH pattern for this service's keys that start with ``suffix``."""
    # KEY_PREFIX could hold glob characters; escape them for SCAN MATCH.
    prefix = key(suffix)
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + "*"


def clear(*, sign_in_limits: bool = False) -> int:
    """Delete this service's cached products, fill leases and throttle counters, on every master.

    The buckets' ``gen`` and ``srv`` keys stay: without values they hold
    nothing stale, and deleting them would make every process that connects
    later retire generations for nothing. The failed sign-in counters stay
    too unless ``sign_in_limits`` (tests): clearing the cache, a routine step
    after raw SQL, must not lift a password-guessing lock. Other prefixes are
    untouched; never FLUSHDB.
    """
    # Whole keys and a whole prefix, not endings: a product's own key ends
    # with its name, which may well be "x}:gen" or hold ":throttle:authfail:".
    keep = {(bucket_prefix(b) + suffix).encode() for b in range(BUCKETS) for suffix in ("gen", "srv")}
    sign_in_counters = key(f"throttle:{SIGN_IN_COUNTERS}").encode()

    def op(client: Client) -> int:
        deleted, batch = 0, []
        # On a cluster, scan_iter walks every master.
        for found in client.scan_iter(match=scan_pattern(), count=1000):
            if found not in keep and (sign_in_limits or not found.startswith(sign_in_counters)):
                batch.append(found)
            if len(batch) >= 1000:
                deleted += client.unlink(*batch)
                batch.clear()
        return deleted + (client.unlink(*batch) if batch else 0)

    return transport.run(op, patience=transport.BULK_PATIENCE)


def info() -> dict[str, object]:
    """Return how many products are cached now (every master), and Redis memory figures."""

    def op(client: Client) -> dict[str, object]:
        prefixes = [bucket_prefix(b) for b in range(BUCKETS)]
        pipe = client.pipeline(transaction=False)
        for prefix in prefixes:
            pipe.get(prefix + "gen")
        gens = {prefix: gen for prefix, gen in zip(prefixes, pipe.execute())}
        # Count the values of each bucket's current generation only, and not
        # the empty ones that say a name has no product (products.cache.ABSENT).
        values = list(client.scan_iter(match=scan_pattern("{b") + ":p:*", count=1000))
        pipe = client.pipeline(transaction=False)
        for value in values:
            pipe.getrange(value, 0, 63)
        cached = 0
        for value, head in zip(values, pipe.execute() if values else []):
            gen = gens.get(value.decode().split("}:", 1)[0] + "}:")
            cached += bool(gen and head.startswith(gen + b"\n") and len(head) > len(gen) + 1)
        if transport.is_cluster(client):
            memory = client.info("memory", target_nodes=client.PRIMARIES)
            used = sum(node.get("used_memory", 0) for node in memory.values())
        else:
            used = client.info("memory").get("used_memory")
        digest = hashlib.blake2b(b"".join(g or b"-" for g in gens.values()), digest_size=6).hexdigest()
        return {
            "cached_products": cached,
            "generation": digest,  # changes whenever any bucket's generation does
            "used_memory": used,
            "used_memory_human": f"{used / 1048576:.2f}M" if used is not None else None,
        }

    return transport.run(op, patience=transport.BULK_PATIENCE)
