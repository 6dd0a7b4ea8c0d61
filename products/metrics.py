"""Prometheus metrics: what the app counts, and the registry /metrics reads.

The cache and the request log call the small functions here; this module
imports nothing of the project, so any layer may call it.

Several gunicorn workers each count in their own process. With
``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn.conf.py sets it before any worker
starts) prometheus-client keeps every process's values in files there and
:func:`render` adds them up at scrape time; without it (runserver, tests)
the values live in this process.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable

# prometheus-client picks multiprocess mode when it is imported and fails on
# the first metric if the directory is missing; make it, rather than fail a
# command run with the variable exported.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from .metricfiles import files_locked

__all__ = [
    "CONTENT_TYPE_LATEST",
    "breaker_state",
    "cache_lookup",
    "generation_retired",
    "lease_wait",
    "observe_request",
    "register_outbox_reader",
    "render",
    "set_pending_invalidations",
]

# Methods outside this set share one label value: clients choose the method,
# and every label value is a time series Prometheus keeps.
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))

REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by route (URL pattern name), method and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Time to answer a request, by route (URL pattern name).",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CACHE_LOOKUPS = Counter(
    "product_cache_lookups_total",
    "Product cache lookups by result: hit, miss (read the database and filled), "
    "bypass (Redis down or breaker open, or the cache is off / inside a transaction).",
    ["result"],
)
LEASE_WAITS = Counter(
    "product_cache_lease_waits_total",
    "Lookups that found another reader filling the product and waited for it.",
)
BREAKER_OPEN = Gauge(
    "product_cache_breaker_open",
    "Worker processes whose Redis circuit breaker is open now (skipping the cache).",
    multiprocess_mode="livesum",
)
BREAKER_TRIPS = Counter(
    "product_cache_breaker_trips_total",
    "Times a Redis failure opened a process's circuit breaker.",
)
GENERATION_RETIREMENTS = Counter(
    "product_cache_generation_retirements_total",
    "Times the product cache generation was retired (every cached product dropped at once).",
)
PENDING_INVALIDATIONS = Gauge(
    "product_cache_pending_invalidations",
    "Product names whose invalidation a process missed and has yet to deliver, summed over "
    "live processes (a pending retirement of every bucket counts 1).",
    multiprocess_mode="livesum",
)
DB_QUERIES = Counter(
    "db_queries_total",
    "SQL statements sent to the database, by connection alias.",
    ["alias"],
)


# labels() costs a lock and a dict lookup per call; the children are few
# (bounded labels), so keep them. Several microseconds on every request.
_request_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
_lookup_children: dict[str, Counter] = {}


def observe_request(route: str, method: str, status: int | str, seconds: float) -> None:
    """Count one answered request."""
    key = (route, method, str(status))
    children = _request_children.get(key)
    if children is None:
        method = method if method in _METHODS else "other"
        children = (REQUESTS.labels(route, method, key[2]), REQUEST_SECONDS.labels(route))
        if len(_request_children) < 10_000:
            _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def cache_lookup(result: str) -> None:
    """Count one product cache lookup: "hit", "miss" or "bypass"."""
    child = _lookup_children.get(result)
    if child is None:
        child = _lookup_children[result] = CACHE_LOOKUPS.labels(result)
    child.inc()


def lease_wait() -> None:
    LEASE_WAITS.inc()


def breaker_state(is_open: bool) -> None:
    """Record this process's breaker opening (True) or closing (False)."""
    if is_open:
        BREAKER_TRIPS.inc()
    BREAKER_OPEN.set(1 if is_open else 0)


def generation_retired() -> None:
    GENERATION_RETIREMENTS.inc()


def set_pending_invalidations(count: int) -> None:
    """Report how many invalidations this process has yet to deliver to Redis."""
    PENDING_INVALIDATIONS.set(count)


_outbox_reader: Callable[[], tuple[int, float | None]] | None = None


def register_outbox_reader(reader: Callable[[], tuple[int, float | None]]) -> None:
    """Read the database outbox at scrape time: ``reader()`` returns (pending rows, oldest age in s)."""
    global _outbox_reader
    _outbox_reader = reader


class _OutboxCollector:
    """The outbox's pending invalidations, read from the database at scrape time."""

    def collect(self):
        if _outbox_reader is None:
            return
        try:
            count, oldest = _outbox_reader()
        except Exception:  # the database is down: say nothing rather than fail the scrape
            return
        yield GaugeMetricFamily(
            "product_cache_outbox_pending",
            "Invalidations recorded in the database outbox and not yet applied to Redis.",
            value=count,
        )
        yield GaugeMetricFamily(
            "product_cache_outbox_oldest_seconds",
            "Age of the oldest pending outbox invalidation (0 when none).",
            value=oldest or 0.0,
        )


_query_children: dict[str, Counter] = {}


def count_query(execute, sql, params, many, context):
    """Count every statement a connection executes (an execute wrapper, installed by apps.ready)."""
    count_query_direct(context["connection"].alias)
    return execute(sql, params, many, context)


def count_query_direct(alias: str) -> None:
    """Count one statement sent around Django's cursor (products.selectors' direct read)."""
    child = _query_children.get(alias)
    if child is None:
        child = _query_children[alias] = DB_QUERIES.labels(alias)
    child.inc()


def render() -> tuple[bytes, str]:
    """Return the current metrics of every worker process in the text format, and its content type."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        with files_locked(directory, fcntl.LOCK_SH):  # not while a dead worker's files are folded
            body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if _outbox_reader is not None:
        extra = CollectorRegistry()
        extra.register(_OutboxCollector())
        body += generate_latest(extra)
    return body, CONTENT_TYPE_LATEST
