"""Prometheus metrics (/metrics) and the liveness / readiness probes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client
from prometheus_client import REGISTRY

from products import cache, monitoring
from products.models import Product
from products.selectors import product_json

from .support.gunicorn import Gunicorn
from .support.processes import BASE_DIR, free_port, server_env
from .support.processes import migrate as migrate_database


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """Read a sample before and after a block: how much did it grow?"""

    def __init__(self, name: str, **labels: str) -> None:
        self.name, self.labels = name, labels
        self.before = value(name, **labels)

    @property
    def grown(self) -> float:
        return value(self.name, **self.labels) - self.before


# --- /metrics, in this process --------------------------------------------------


@pytest.mark.django_db
def test_metrics_answer_the_text_format_to_loopback_only(client, settings):
    response = client.get("/metrics")  # the test client's peer is 127.0.0.1
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert b"# TYPE http_requests_total counter" in response.content
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 404
    # The peer counts, not a header the client writes.
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 404
    # Relayed by a proxy on this host (peer 127.0.0.1): not the scraper.
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 404
    assert client.get("/metrics", HTTP_FORWARDED="for=203.0.113.9").status_code == 404
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics").status_code == 404


def test_metrics_answer_head_and_refuse_other_methods_with_a_json_405():
    client = Client(enforce_csrf_checks=True)
    head = client.head("/metrics")
    assert head.status_code == 200 and head["Content-Type"].startswith("text/plain; version=")
    for method in ("post", "put", "delete"):
        response = getattr(client, method)("/metrics")
        assert response.status_code == 405, (method, response.content[:80])  # not CSRF's 403 page
        assert response.json() == {"detail": f'Method "{method.upper()}" not allowed.'}
        assert response["Allow"] == "GET, HEAD"
    # Someone not allowed to scrape learns nothing more from another method.
    assert client.post("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 404


@pytest.mark.django_db
def test_requests_are_counted_by_route_name_and_status_not_raw_path(anon_client, make_product):
    make_product("Lamp")
    ok = Delta("http_requests_total", route="product-detail", method="GET", status="200")
    missing = Delta("http_requests_total", route="product-detail", method="GET", status="404")
    unmatched = Delta("http_requests_total", route="(unmatched)", method="GET", status="404")
    odd = Delta("http_requests_total", route="product-list", method="other", status="405")
    timed = Delta("http_request_duration_seconds_count", route="product-detail")
    for _ in range(3):
        anon_client.get("/api/products/Lamp/")
    anon_client.get("/api/products/Nope/")
    anon_client.get("/no/such/page/x1")
    anon_client.generic("BREW", "/api/products/")
    assert (ok.grown, missing.grown, unmatched.grown, odd.grown, timed.grown) == (3, 1, 1, 1, 4)
    body = anon_client.get("/metrics").content.decode()
    assert "Lamp" not in body and "x1" not in body and "BREW" not in body


def test_a_request_answered_before_routing_still_counts_under_its_route(editor_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    too_large = Delta("http_requests_total", route="product-list", method="POST", status="413")
    static = Delta("http_requests_total", route="(static)", method="GET", status="200")
    response = editor_client.post("/api/products/", {"name": "x" * 200, "price": "1.00"}, format="json")
    assert response.status_code == 413
    assert editor_client.get("/static/rest_framework/css/default.css").status_code == 200
    assert (too_large.grown, static.grown) == (1, 1)


@pytest.mark.django_db(transaction=True)
def test_cache_lookups_count_miss_then_hit_and_queries_are_counted():
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    miss, hit = (
        Delta("product_cache_lookups_total", result="miss"),
        Delta("product_cache_lookups_total", result="hit"),
    )
    queries = Delta("db_queries_total", alias="default")
    cache.get_product("Mug", product_json)
    cache.get_product("Mug", product_json)
    assert (miss.grown, hit.grown) == (1, 1)
    assert queries.grown == 1  # the miss read the database once


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_redis_down_counts_bypass_breaker_and_retirement(private_redis):
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    bypass = Delta("product_cache_lookups_total", result="bypass")
    trips = Delta("product_cache_breaker_trips_total")
    retired = Delta("product_cache_generation_retirements_total")
    private_redis.kill(save=True)  # back from its snapshot, with the cache's marks of before
    assert cache.get_product("Mug", product_json) is not None
    assert value("product_cache_breaker_open") == 1
    Product.objects.filter(name="Mug").update(price=Decimal("2.00"))  # the invalidation is missed
    assert (bypass.grown, trips.grown) == (1, 1)
    assert value("product_cache_pending_invalidations") == 1  # "Mug", until Redis answers
    private_redis.start()
    deadline = time.monotonic() + 10
    while value("product_cache_breaker_open") and time.monotonic() < deadline:
        time.sleep(0.1)  # the probe finds Redis back and retires the generation
    assert value("product_cache_breaker_open") == 0
    while value("product_cache_pending_invalidations") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert value("product_cache_pending_invalidations") == 0  # delivered
    # A server restarted from its snapshot is new to the cache: its buckets start afresh.
    assert retired.grown >= 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_the_outbox_is_read_at_scrape_time(private_redis, client):
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    private_redis.kill()
    # Missed: recorded in the outbox, and nobody can apply it while Redis is down.
    Product.objects.filter(name="Mug").update(price=Decimal("2.00"))
    body = client.get("/metrics").content.decode()
    assert re.search(r"^product_cache_outbox_pending [1-9]", body, re.M), body
    assert re.search(r"^product_cache_outbox_oldest_seconds \d", body, re.M)


@pytest.mark.django_db(transaction=True)
def test_a_reader_waiting_for_another_readers_fill_is_counted():
    Product.objects.create(name="Hot", price=Decimal("1.00"), quantity=1)
    has_read, may_fill = threading.Event(), threading.Event()

    def hold(name):
        has_read.set()
        assert may_fill.wait(10)

    waits = Delta("product_cache_lease_waits_total")
    cache.after_database_read = hold
    try:
        filler = threading.Thread(target=lambda: (cache.get_product("Hot", product_json), connection.close()))
        filler.start()
        assert has_read.wait(10)
        cache.after_database_read = None
        waiter = threading.Thread(target=lambda: (cache.get_product("Hot", product_json), connection.close()))
        waiter.start()
        time.sleep(0.1)
        may_fill.set()
        filler.join(10)
        waiter.join(10)
    finally:
        cache.after_database_read = None
        may_fill.set()
    assert waits.grown == 1


# --- Probes -------------------------------------------------------------------------


@pytest.mark.django_db
def test_live_and_ready_answer_200_and_health_is_unchanged(anon_client):
    assert anon_client.get("/health/live/").json() == {"status": "ok"}
    assert anon_client.get("/health/ready/").json() == {"database": "ok", "migrations": "ok"}
    assert set(anon_client.get("/health/").json()) == {"database", "cache"}


@pytest.mark.django_db
def test_ready_answers_503_while_a_migration_is_unapplied(anon_client):
    monitoring._migrated.clear()
    MigrationRecorder(connection).migration_qs.filter(app="products").delete()  # rolled back after the test
    try:
        response = anon_client.get("/health/ready/")
        assert response.status_code == 503
        assert re.fullmatch(r"\d+ unapplied", response.json()["migrations"])
        assert anon_client.get("/health/live/").status_code == 200
    finally:
        monitoring._migrated.clear()


# --- A real gunicorn with several workers --------------------------------------------


class MetricsGunicorn(Gunicorn):
    def __init__(self, tmp_path: Path, workers: int, migrate: bool = True, **env: str) -> None:
        self.metrics_dir = tmp_path / "metrics"
        # Commands run without the metrics directory: only the server's processes count.
        commands_env = server_env(**{"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", **env})
        if migrate:
            migrate_database(commands_env)
        super().__init__(
            {**commands_env, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)},
            workers,
            threads=None,
            quiet=False,
            ready="/health/live/",
        )
        self.start()
        self.env = commands_env

    def scrape(self) -> str:
        response = requests.get(self.url + "/metrics", timeout=5)
        assert response.status_code == 200
        return response.text


@pytest.fixture
def metrics_gunicorn(tmp_path) -> Iterator[callable]:
    started: list[MetricsGunicorn] = []

    def start(workers: int = 2, **kwargs) -> MetricsGunicorn:
        server = MetricsGunicorn(tmp_path, workers, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + ("{" + wanted + "}" if labels else " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def worker_pids(metrics_dir: Path) -> set[int]:
    return {int(m.group(1)) for f in os.listdir(metrics_dir) if (m := re.fullmatch(r"counter_(\d+)\.db", f))}


@pytest.mark.slow
def test_several_workers_add_up_and_a_dead_workers_counts_stay(metrics_gunicorn):
    server = metrics_gunicorn(workers=3)
    token_env = server.env
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from products.models import Product; "
            "Product.objects.create(name='Mug', price='1.00', quantity=1)",
        ],
        cwd=BASE_DIR,
        env=token_env,
        check=True,
    )
    session = requests.Session()
    # Concurrent new connections spread the requests over the workers (one
    # client in sequence may be served by one worker throughout).
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(
            pool.map(
                lambda _: requests.get(server.url + "/api/products/Mug/", timeout=5).status_code, range(60)
            )
        )
    assert statuses == [200] * 60
    for _ in range(20):
        assert requests.get(server.url + "/api/products/?search=mu", timeout=5).status_code == 200
    assert session.get(server.url + "/api/products/Nope/", timeout=5).status_code == 404
    text = server.scrape()
    pids = worker_pids(server.metrics_dir)
    assert len(pids) >= 2, "the requests should have reached several workers"
    assert sample(text, "http_requests_total", method="GET", route="product-detail", status="200") == 60
    assert sample(text, "http_requests_total", method="GET", route="product-list", status="200") == 20
    assert sample(text, "http_requests_total", method="GET", route="product-detail", status="404") == 1
    assert sample(text, "http_request_duration_seconds_count", route="product-detail") == 61
    lookups = sum(sample(text, "product_cache_lookups_total", result=r) for r in ("hit", "miss", "bypass"))
    assert lookups == 61 and sample(text, "product_cache_lookups_total", result="hit") >= 57
    assert sample(text, "db_queries_total", alias="default") >= 21

    # A killed worker's counts stay; its live gauges go (child_exit).
    victim = max(pids)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (server.metrics_dir / f"gauge_livesum_{victim}.db").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (server.metrics_dir / f"gauge_livesum_{victim}.db").exists()
    after = server.scrape()
    assert sample(after, "http_requests_total", method="GET", route="product-detail", status="200") == 60
    print(
        "\n/metrics excerpt after traffic:\n"
        + "\n".join(
            line
            for line in text.splitlines()
            if line.startswith(("http_requests_total", "product_cache", "db_queries_total"))
        )
    )


@pytest.mark.slow
def test_ready_is_503_without_migrations_or_database_and_live_stays_200(metrics_gunicorn):
    unmigrated = metrics_gunicorn(workers=1, migrate=False)
    ready = requests.get(unmigrated.url + "/health/ready/", timeout=5)
    assert ready.status_code == 503 and ready.json()["migrations"].endswith("unapplied")
    assert requests.get(unmigrated.url + "/health/live/", timeout=5).status_code == 200
    unmigrated.stop()
    no_database = metrics_gunicorn(
        workers=1, migrate=False, DATABASE_URL=f"postgres://nobody@127.0.0.1:{free_port()}/none"
    )
    ready = requests.get(no_database.url + "/health/ready/", timeout=10)
    assert (ready.status_code, ready.json()) == (503, {"database": "down"})
    assert requests.get(no_database.url + "/health/live/", timeout=5).status_code == 200


@pytest.mark.slow
def test_replaced_workers_leave_their_counts_in_one_archive_not_two_files_each(metrics_gunicorn):
    # gunicorn replaces a worker after max_requests; each left a counter and a
    # histogram file that every scrape read until gunicorn restarted (a review:
    # 206 files after 9,000 requests at 100 per worker, /metrics 9.8 -> 17.6 ms).
    server = metrics_gunicorn(workers=2, GUNICORN_MAX_REQUESTS="10", GUNICORN_MAX_REQUESTS_JITTER="0")
    seen: list[float] = []
    done = threading.Event()

    def scrape_meanwhile() -> None:
        while not done.is_set():
            response = requests.get(server.url + "/metrics", timeout=5)
            assert response.status_code == 200
            seen.append(
                sample(response.text, "http_requests_total", method="GET", route="product-list", status="200")
            )
            time.sleep(0.02)

    scraper = threading.Thread(target=scrape_meanwhile)
    scraper.start()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = list(
                pool.map(
                    lambda _: requests.get(server.url + "/api/products/", timeout=10).status_code, range(200)
                )
            )
    finally:
        done.set()
        scraper.join(30)
    assert statuses == [200] * 200
    # Folded while scrapes ran: a count never went back (counted twice, then once).
    assert seen == sorted(seen) and len(seen) > 5, seen
    deadline = time.monotonic() + 10
    while len(worker_pids(server.metrics_dir)) > 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # a worker replaced just now: folded when the master reaps it
    files = sorted(f for f in os.listdir(server.metrics_dir) if f.startswith(("counter_", "histogram_")))
    assert len(worker_pids(server.metrics_dir)) <= 2 and "counter_archive.db" in files, files
    assert len(files) <= 2 * 2 + 2, files  # two live workers' and the archives
    text = server.scrape()
    assert sample(text, "http_requests_total", method="GET", route="product-list", status="200") == 200
    assert sample(text, "http_request_duration_seconds_count", route="product-list") == 200
