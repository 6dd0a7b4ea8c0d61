"""Redis refusing, hanging or restarting never turns into an error or a stale read."""

import logging
import threading
import time
from decimal import Decimal

import pytest
import requests

from products import cachekeys
from products.models import Product

from .support.cache_state import paused_then_resync_held
from .support.gunicorn import Gunicorn
from .support.processes import free_port, server_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

URL = "/api/products/Mug/"


def outage_log_lines(caplog) -> int:
    return sum("Redis unavailable" in r.getMessage() for r in caplog.records)


@pytest.fixture
def refusing_redis(settings):
    """Point the cache at a port where nothing listens: connections are refused."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": url}}
    return url


def test_refused_connections_still_serve_reads_and_writes(refusing_redis, editor_client, anon_client, caplog):
    caplog.set_level(logging.WARNING, logger="products")
    assert (
        editor_client.post("/api/products/", {"name": "Mug", "price": "1.00"}, format="json").status_code
        == 201
    )
    for _ in range(5):
        response = anon_client.get(URL)
        assert response.status_code == 200
        assert response["X-Cache"] == "MISS"
    assert editor_client.patch(URL, {"price": "2.00"}, format="json").status_code == 200
    assert anon_client.get(URL).json()["price"] == "2.00"
    assert anon_client.get("/products/Mug").status_code == 200
    assert anon_client.get("/health/").json() == {"database": "ok", "cache": "down"}
    assert outage_log_lines(caplog) == 1


@pytest.mark.hangs_redis
def test_paused_redis_costs_bounded_latency_and_logs_once(
    private_redis, anon_client, editor_client, settings, caplog, monkeypatch
):
    settings.PRODUCT_CACHE_BACKOFF = 0.2  # several probes fail during the pause
    caplog.set_level(logging.WARNING, logger="products")
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    assert anon_client.get(URL)["X-Cache"] == "MISS"
    assert anon_client.get(URL)["X-Cache"] == "HIT"

    # What a request waits on the paused Redis: one socket timeout per failed
    # call, each of which opens the breaker (counted here, in this thread).
    from products import transport

    waits = [0]
    trip = transport._breaker.trip

    def counted_trip(exc):
        if threading.current_thread() is threading.main_thread():
            waits[0] += 1
        trip(exc)

    monkeypatch.setattr(transport._breaker, "trip", counted_trip)
    private_redis.pause()
    try:
        latencies, errors, timeouts = [], 0, []
        began = time.monotonic()
        for i in range(100):
            start, before = time.perf_counter(), waits[0]
            response = anon_client.get(URL)
            latencies.append(time.perf_counter() - start)
            timeouts.append(waits[0] - before)
            errors += response.status_code != 200
            if i % 10 == 0:
                time.sleep(0.05)  # spread the requests over several back-off periods
        elapsed = time.monotonic() - began
        write = editor_client.patch(URL, {"price": "2.00"}, format="json")
        health = anon_client.get("/health/").json()
    finally:
        private_redis.resume()
    latencies.sort()
    p99 = latencies[98]
    print(
        f"\nRedis paused: 100 GETs in {elapsed:.2f}s, errors={errors}, {sum(timeouts)} waited a timeout, "
        f"p50={latencies[49] * 1000:.1f}ms p99={p99 * 1000:.1f}ms max={latencies[-1] * 1000:.1f}ms"
    )
    assert errors == 0
    # Bounded whatever the machine's load (the wall clock, p99 < 0.25 s, was
    # not on a loaded CI machine): no request waits more than one timeout,
    # and only one per back-off period waits at all; most wait for nothing.
    assert max(timeouts) <= 1
    assert sum(timeouts) <= elapsed / settings.PRODUCT_CACHE_BACKOFF + 2
    assert latencies[49] < settings.REDIS_SOCKET_TIMEOUT
    assert (
        p99 < 1.0
    )  # a backstop for waits the count misses (a lease wait is 0.5 s); loaded runs read <= 0.51 s
    assert write.status_code == 200
    assert health["cache"] == "down"
    assert outage_log_lines(caplog) == 1

    # Redis answers again: caching resumes by itself, with the new value.
    deadline = time.monotonic() + 10
    while True:
        response = anon_client.get(URL)
        assert response.json()["price"] == "2.00"
        if response["X-Cache"] == "HIT":
            break
        assert time.monotonic() < deadline, "caching did not resume within 10 s"
        time.sleep(0.1)
    assert any("answering again" in r.getMessage() for r in caplog.records)


@pytest.mark.hangs_redis
def test_no_read_passes_a_resync_another_thread_is_still_running(
    private_redis, anon_client, editor_client, settings, monkeypatch
):
    # A write's invalidation missed a paused Redis. When Redis answers again,
    # the thread that runs the resync (here the probe) deletes the old value;
    # a request in another thread must not read Redis before that delete is
    # done. It once could: the pending flag was cleared as the resync began,
    # and a loaded CI run served the old price right after "answering again".
    settings.PRODUCT_CACHE_BACKOFF = 0.05
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    assert anon_client.get(URL)["X-Cache"] == "MISS"
    assert anon_client.get(URL)["X-Cache"] == "HIT"
    with paused_then_resync_held(private_redis, monkeypatch) as resync:
        assert editor_client.patch(URL, {"price": "2.00"}, format="json").status_code == 200
    assert resync.started.wait(5), "the probe did not start the resync"
    time.sleep(2 * settings.PRODUCT_CACHE_BACKOFF)  # the breaker lets reads try Redis again
    resync.release_after(2.0)
    started = time.monotonic()
    response = anon_client.get(URL)
    waited = time.monotonic() - started
    assert response.json()["price"] == "2.00"
    assert response["X-Cache"] != "HIT"
    # It waits for the resync at most one socket timeout, then reads the
    # database (a resync can take several timeouts: a cluster master down).
    assert waited < 1.0, waited
    assert not resync.released
    time.sleep(2.2)
    assert anon_client.get(URL).json()["price"] == "2.00"


def test_a_full_redis_is_one_outage_not_a_flapping_breaker(
    private_redis, anon_client, editor_client, settings, caplog
):
    # maxmemory with noeviction (Redis's default policy): every miss's lease
    # is refused with OOM, while DEL and PING still work. The breaker used to
    # close on those and re-open on the next miss, many times a second.
    from products import transport

    settings.PRODUCT_CACHE_BACKOFF = 0.05
    caplog.set_level(logging.WARNING, logger="products")
    names = [f"Mug {i}" for i in range(30)]
    for name in names:
        Product.objects.create(name=name, price=Decimal("1.00"), quantity=1)
    redis = private_redis.client()
    redis.config_set("maxmemory-policy", "noeviction")
    redis.config_set("maxmemory", 1)  # full at once
    try:
        for name in names:
            time.sleep(0.06)  # past the back-off: each miss tries Redis again
            assert anon_client.get(f"/api/products/{name}/").status_code == 200
            patched = editor_client.patch(f"/api/products/{name}/", {"price": "2.00"}, format="json")
            assert patched.status_code == 200  # its DEL and PING succeed on a full Redis
            transport.probe_if_down()
        assert anon_client.get("/health/").json()["cache"] == "down"
        messages = [r.getMessage() for r in caplog.records]
        assert sum(m.startswith("Redis unavailable (OutOfMemoryError") for m in messages) == 1
        assert not any("caching resumed" in m for m in messages)
    finally:
        redis.config_set("maxmemory", 0)
    time.sleep(0.06)
    # No probe (a process without the outbox applier): the next miss's lease
    # is a write Redis takes, and that closes the breaker.
    assert anon_client.get(f"/api/products/{names[1]}/")["X-Cache"] == "MISS"
    assert sum("caching resumed" in r.getMessage() for r in caplog.records) == 1
    assert anon_client.get("/health/").json()["cache"] == "ok"
    assert anon_client.get(f"/api/products/{names[0]}/").json()["price"] == "2.00"
    assert anon_client.get(f"/api/products/{names[0]}/")["X-Cache"] == "HIT"
    # Memory at the limit again within the minute: counted, not logged again.
    redis.config_set("maxmemory", 1)
    try:
        time.sleep(0.06)
        assert anon_client.get(f"/api/products/{names[2]}/").status_code == 200
        assert transport.breaker_open()
    finally:
        redis.config_set("maxmemory", 0)
    time.sleep(0.06)
    assert anon_client.get(f"/api/products/{names[3]}/").status_code == 200
    assert not transport.breaker_open()
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("Redis unavailable") for m in messages) == 1
    assert sum("caching resumed" in m for m in messages) == 1


def test_a_redis_restarted_full_from_an_old_snapshot_never_serves_it(
    private_redis, anon_client, editor_client, settings
):
    # A server restarted from a snapshot is checked before it serves: the
    # check retires every bucket's generation. A full Redis refused those
    # writes, and the refusals went unnoticed: the snapshot's values were
    # served as hits (and revoked token permissions honoured).
    settings.PRODUCT_CACHE_BACKOFF = 0.05
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    anon_client.get(URL)
    assert anon_client.get(URL)["X-Cache"] == "HIT"
    private_redis.client().save()  # the snapshot holds price 1.00
    assert editor_client.patch(URL, {"price": "2.00"}, format="json").status_code == 200
    private_redis.kill()
    private_redis.start("--maxmemory", "1", "--maxmemory-policy", "noeviction")
    for _ in range(20):
        response = anon_client.get(URL)
        assert response.json()["price"] == "2.00", response["X-Cache"]
        time.sleep(0.01)
    private_redis.client().config_set("maxmemory", 0)
    time.sleep(0.06)
    assert anon_client.get(URL).json()["price"] == "2.00"  # the check retires the snapshot's generations now
    assert anon_client.get(URL)["X-Cache"] == "HIT"


def test_write_during_outage_is_not_undone_by_a_redis_restarted_with_old_data(
    private_redis, anon_client, editor_client
):
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    anon_client.get(URL)
    assert anon_client.get(URL)["X-Cache"] == "HIT"

    # Checked before the kill, not after the restart: once Redis answers
    # again, this process's outbox applier may delete the old value first.
    client = private_redis.client()
    assert any(b"1.00" in client.get(k) for k in client.keys("*:p:*"))
    private_redis.kill(save=True)  # its dump holds the cached 1.00
    assert editor_client.patch(URL, {"price": "2.00"}, format="json").status_code == 200
    private_redis.start()  # back, with the old value on disk

    stale = reads = 0
    hit_after = None
    began = time.monotonic()
    while time.monotonic() - began < 10:
        response = anon_client.get(URL)
        reads += 1
        stale += response.json()["price"] != "2.00"
        if response["X-Cache"] == "HIT" and hit_after is None:
            hit_after = time.monotonic() - began
        if hit_after is not None and reads >= 50:
            break
        time.sleep(0.02)
    print(
        f"\nRedis restarted with old data: {reads} reads, {stale} stale, cache hits again after {hit_after:.2f}s"
    )
    assert stale == 0
    assert hit_after is not None and hit_after < 10


def test_redis_back_after_outage_is_resynced_by_the_probe_without_requests(
    private_redis, anon_client, editor_client
):
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    anon_client.get(URL)
    gen_key = cachekeys.product_keys("Mug").gen
    before = private_redis.client().get(gen_key)
    assert before
    private_redis.kill(save=True)  # the snapshot holds ``before``
    assert editor_client.patch(URL, {"price": "2.00"}, format="json").status_code == 200
    private_redis.start()  # with the old data (not checked here: the probe may already have run)
    # No request arrives; the background probe alone retires the generation.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if private_redis.client().get(gen_key) not in (before, None):
            break
        time.sleep(0.05)
    after = private_redis.client().get(gen_key)
    assert after not in (before, None), "the generation was not retired"


def test_health_is_503_when_the_database_is_unreachable():
    env = server_env(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nowhere", LOG_LEVEL="CRITICAL"
    )
    server = Gunicorn(env, workers=1)
    server.start()
    try:
        response = requests.get(server.url + "/health/", timeout=10)
    finally:
        server.stop()
    assert response.status_code == 503
    assert response.json()["database"] == "down"


def _read_list_product_and_legacy(server: Gunicorn) -> list[requests.Response]:
    """GET the list, a product never cached, and the same through the legacy route."""
    return [
        requests.get(server.url + path, timeout=10)
        for path in ("/api/products/", "/api/products/Never%20cached/", "/products/Never%20cached")
    ]


def test_api_answers_503_not_500_when_the_database_is_unreachable():
    # A database outage is temporary: clients should retry, not report a bug.
    env = server_env(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nowhere", LOG_LEVEL="CRITICAL"
    )
    server = Gunicorn(env, workers=1)
    server.start()
    try:
        answers = _read_list_product_and_legacy(server)
    finally:
        server.stop()
    for response in answers:
        assert response.status_code == 503, (response.url, response.status_code, response.text)
        assert response.json() == {"detail": "The database is unavailable; try again shortly."}
        assert response.headers["Retry-After"] == "5"


def test_api_answers_503_not_500_on_a_database_not_migrated_yet(tmp_path):
    # A deploy that starts the server before `manage.py migrate`: PostgreSQL
    # says "relation does not exist" (a ProgrammingError), SQLite "no such table".
    from django.db import connection

    if connection.vendor == "postgresql":
        db = connection.settings_dict
        name = f"{db['NAME']}_unmigrated"
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cursor.execute(f'CREATE DATABASE "{name}"')
        url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    else:
        url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    server = Gunicorn(server_env(DATABASE_URL=url, LOG_LEVEL="CRITICAL"), workers=1)
    server.start()
    try:
        answers = _read_list_product_and_legacy(server)
        ready = requests.get(server.url + "/health/ready/", timeout=10)
    finally:
        server.stop()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
    for response in answers:
        assert response.status_code == 503, (response.url, response.status_code, response.text)
        assert response.headers["Retry-After"] == "5"
    assert ready.status_code == 503


def test_a_quiet_memory_outage_that_turns_into_another_failure_is_logged(caplog):
    # An outage for want of memory within a minute of the last is not logged;
    # if Redis then stops answering at all, that is news.
    from redis.exceptions import ConnectionError, OutOfMemoryError

    from products import transport

    caplog.set_level(logging.WARNING, logger="products.transport")
    transport.trip(OutOfMemoryError("full"))  # logged: the first this minute
    transport.wrote()  # a write went through: over
    transport.trip(OutOfMemoryError("full"))  # at the limit again: quiet
    assert outage_log_lines(caplog) == 1
    transport.trip(ConnectionError("refused"))
    assert outage_log_lines(caplog) == 2
    assert "ConnectionError: refused" in caplog.records[-1].getMessage()
    transport.reset()
