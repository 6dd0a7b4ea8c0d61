"""Where the product cache lives in Redis: buckets, hash tags, generations.

One scheme for a single Redis, Sentinel and Redis Cluster. Each product
belongs to one of ``BUCKETS`` buckets (CRC-32 of its name); a bucket's keys
share the hash tag ``{bN}``, so they live in one slot and every script
touches one slot, while the 256 buckets spread the products over all
masters. Every key also carries the cache's ``KEY_PREFIX`` and version::

    products:v2:{bN}:gen          bucket N's generation, a random token
    products:v2:{bN}:srv          run_id of the server that generation was adopted on
    products:v2:{bN}:p:<name>     "<gen>\\n<JSON bytes>" (plain data, never pickles)
    products:v2:{bN}:l:<name>     the fill lease, "<gen>:<token>"
    products:v2:throttle:...      throttle counters (products.counters)

A value or lease counts only while its bucket's generation is the one it
carries (the scripts in ``lua/`` compare), so *retiring* a generation (a new
token) makes the bucket's older values unreachable at once. Invalidating a
name needs no generation: it deletes the value and lease keys.

:func:`clear` and :func:`info` walk every master of a cluster.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import zlib
from typing import NamedTuple

from . import transport
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


def bucket_prefix(bucket: int) -> str:
    """Return the full key prefix of a bucket, ending with ":"."""
    return key(f"{{b{bucket}}}:")


def product_keys(name: str) -> ProductKeys:
    """Return the keys of ``name``'s bucket generation, value and fill lease."""
    prefix = bucket_prefix(zlib.crc32(name.encode("utf-8", "surrogatepass")) % BUCKETS)
    return ProductKeys(prefix + "gen", prefix + "p:" + name, prefix + "l:" + name)


def new_generation() -> str:
    return secrets.token_hex(8)


def retire_all(client: Client) -> None:
    """Give every bucket a new generation, in one pipelined round trip (one per master)."""
    gen = new_generation()
    pipe = client.pipeline(transaction=False)
    for bucket in range(BUCKETS):
        pipe.set(bucket_prefix(bucket) + "gen", gen)
    pipe.execute()
    logger.warning("Product cache generation retired; older cached products are unreachable")


def delete(client: Client, names: list[str]) -> None:
    """Delete the values and fill leases of ``names`` (whatever their generation)."""
    for start in range(0, len(names), 500):
        keys = [k for name in names[start : start + 500] for k in product_keys(name)[1:]]
        client.delete(*keys)  # on a cluster, redis-py splits it by slot


def adopt(connection: Connection, run_id: str) -> None:
    """Retire the generation of every bucket on this server that another server instance set.

    transport runs it on a new connection to a server this process has not
    checked, before the connection serves anything: after a restart from a
    snapshot or a failover, the ``srv`` keys name the old run_id, so those
    buckets start afresh. On a cluster each master answers for its own
    buckets and refuses the others (MOVED); their masters' connections do them.
    """
    gen = new_generation()
    calls = [([p + "gen", p + "srv"], [run_id, gen]) for p in map(bucket_prefix, range(BUCKETS))]
    replies = transport.eval_on_connection(connection, "adopt", calls)
    retired = sum(1 for reply in replies if reply == 1)
    if retired:
        logger.warning(
            "Redis server %s is new to this cache: %d bucket generation(s) retired", run_id, retired
        )


def scan_pattern(suffix: str = "") -> str:
    """Return a SCAN MATCH pattern for this service's keys that start with ``suffix``."""
    # KEY_PREFIX could hold glob characters; escape them for SCAN MATCH.
    prefix = key(suffix)
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + "*"


def clear() -> int:
    """Delete every key of this service's product cache, on every master.

    Products, leases, generations and throttle counters; other keys (other
    prefixes) are untouched; never FLUSHDB.
    """

    def op(client: Client) -> int:
        deleted, batch = 0, []
        # On a cluster, scan_iter walks every master.
        for key in client.scan_iter(match=scan_pattern(), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += client.unlink(*batch)
                batch.clear()
        return deleted + (client.unlink(*batch) if batch else 0)

    return transport.run(op)


def info() -> dict[str, object]:
    """Return how many products are cached now (every master), and Redis memory figures."""

    def op(client: Client) -> dict[str, object]:
        prefixes = [bucket_prefix(b) for b in range(BUCKETS)]
        pipe = client.pipeline(transaction=False)
        for prefix in prefixes:
            pipe.get(prefix + "gen")
        gens = {prefix: gen for prefix, gen in zip(prefixes, pipe.execute())}
        # Count the values of each bucket's current generation only.
        values = list(client.scan_iter(match=scan_pattern("{b") + ":p:*", count=1000))
        pipe = client.pipeline(transaction=False)
        for value in values:
            pipe.getrange(value, 0, 63)
        cached = 0
        for value, head in zip(values, pipe.execute() if values else []):
            gen = gens.get(value.decode().split("}:", 1)[0] + "}:")
            cached += bool(gen and head.startswith(gen + b"\n"))
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

    return transport.run(op)
