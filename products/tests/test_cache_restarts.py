"""A Redis that restarts, hangs or trips the breaker never makes a worker serve a replaced value.

Real redis-server processes started, killed, paused and resumed by the tests;
real gunicorn with 3 workers where it matters. Figures are printed (run with
``-s``); the bounds asserted are generous because the test machine is shared.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from decimal import Decimal

import pytest
import requests

from products import cache, cachekeys, transport
from products import missed as missed_module
from products.models import Product
from products.selectors import product_json

from .support.cache_state import reset_process_state
from .support.processes import manage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

URL = "/api/products/Mug/"
CREATE_EDITOR = (
    "from django.contrib.auth.models import User, Permission\n"
    "from rest_framework.authtoken.models import Token\n"
    "u = User.objects.create_user('cache-editor')\n"
    "u.user_permissions.set(Permission.objects.filter(codename__endswith='_product'))\n"
    "print(Token.objects.create(user=u).key)\n"
)


@pytest.fixture
def served(sqlite_gunicorn, redis_process):
    """Gunicorn (3 workers) on a private redis-server, with a cached Mug at 1.00; yields (server, editor)."""
    server = sqlite_gunicorn(workers=3, REDIS_URL=redis_process.url, PRODUCT_CACHE_BACKOFF="1.0")
    editor = requests.Session()
    editor.headers["Authorization"] = (
        "Token " + manage(server.env, "shell", "-c", CREATE_EDITOR).stdout.split()[-1]
    )
    created = editor.post(server.url + "/api/products/", json={"name": "Mug", "price": "1.00"}, timeout=10)
    assert created.status_code == 201
    # Concurrent reads, so every worker has read (and pooled connections to) Redis.
    answers = _read_for(server.url, seconds=1.0, threads=6)
    assert any(hit for _, _, _, hit in answers)
    return server, editor


def _read_for(url: str, seconds: float, threads: int = 6) -> list[tuple[float, float, str, bool]]:
    """GET the Mug from ``threads`` clients for ``seconds``; return (start, end, price, hit) per answer."""
    answers: list[tuple[float, float, str, bool]] = []
    stop = time.monotonic() + seconds

    def reader() -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            start = time.monotonic()
            response = session.get(url + URL, timeout=10)
            assert response.status_code == 200
            answers.append(
                (start, time.monotonic(), response.json()["price"], response.headers["X-Cache"] == "HIT")
            )

    workers = [threading.Thread(target=reader) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return answers


def test_redis_restarted_from_a_snapshot_serves_no_replaced_value_from_any_worker(served, redis_process):
    server, editor = served
    # The snapshot will hold the cached 1.00. (Checked before the kill: once
    # the server is back, the writer's recorded invalidation may reach it
    # within ~0.1 s, before a check made then.)
    client = redis_process.client()
    assert any(b"1.00" in client.get(k) for k in client.keys("*:p:*"))
    redis_process.kill(save=True)
    assert editor.patch(server.url + URL, json={"price": "2.00"}, timeout=10).status_code == 200
    redis_process.start()

    # A process started after the restart, with no record of any server, reads first.
    read = "from products import cache; from products.selectors import product_json\n"
    read += "print(cache.get_product('Mug', product_json).data.decode())"
    assert '"2.00"' in manage(server.env, "shell", "-c", read).stdout

    answers = _read_for(server.url, seconds=3.0)
    stale = [a for a in answers if a[2] != "2.00"]
    hits = sum(hit for *_, hit in answers)
    print(f"\nrestart from snapshot, 3 workers: {len(answers)} reads, {len(stale)} stale, {hits} hits")
    assert not stale
    assert hits > 0  # caching resumed


def test_redis_restarted_from_a_snapshot_does_not_bring_back_a_revoked_permission(served, redis_process):
    # The token's user and permissions are cached (products.token_cache); the
    # snapshot holds that entry under the generation of before the revocation.
    server, editor = served

    def creates(count: int, start: int) -> list[int]:
        return [
            editor.post(
                server.url + "/api/products/", json={"name": f"Snap-{start + i}", "price": "1.00"}, timeout=10
            ).status_code
            for i in range(count)
        ]

    assert creates(9, 0) == [201] * 9  # every worker has authenticated the token
    redis_process.client().save()
    revoke = "from django.contrib.auth.models import User, Permission\n"
    revoke += "User.objects.get(username='cache-editor').user_permissions.remove("
    revoke += "*Permission.objects.filter(codename='add_product'))"
    assert manage(server.env, "shell", "-c", revoke).returncode == 0
    assert creates(3, 100) == [403] * 3
    redis_process.kill()  # the snapshot on disk is the one from before the revocation
    redis_process.start()
    answers: list[int] = []
    deadline = time.monotonic() + 3  # past the breaker's 1 s: the workers use the restarted Redis again
    while time.monotonic() < deadline:
        answers += creates(3, 200 + len(answers))
    assert answers and set(answers) == {403}, answers


def test_hung_redis_serves_no_replaced_value_half_a_second_after_it_resumes(served, redis_process):
    server, editor = served
    # Nobody reads during the hang: the workers that did not serve the write
    # never see the outage, their breakers stay closed, and they read Redis
    # the moment it resumes. Only the writer knows the invalidation missed.
    redis_process.pause()
    try:
        time.sleep(0.2)
        assert editor.patch(server.url + URL, json={"price": "2.00"}, timeout=10).status_code == 200
        time.sleep(0.3)
    finally:
        redis_process.resume()
    resumed = time.monotonic()
    answers = _read_for(server.url, seconds=2.0)
    stale = [end - resumed for _, end, price, _ in answers if price != "2.00"]
    window = max(stale, default=0.0)
    print(
        f"\nhung Redis, 3 workers: {len(answers)} reads after it resumed, {len(stale)} stale, "
        f"the last answered {window * 1000:.0f} ms after it resumed"
    )
    assert window < 1.0  # the goal is 0.5 s; measured figures are in the report
    assert any(hit for start, _, _, hit in answers if start > resumed + 0.5)


@pytest.mark.hangs_redis
def test_an_open_breaker_does_not_skip_an_invalidation(private_redis, monkeypatch):
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    cache.get_product("Mug", product_json)
    value_key = cachekeys.product_keys("Mug").value
    assert private_redis.client().exists(value_key)
    missed: list = []
    monkeypatch.setattr(missed_module, "hooks", [missed.append])

    private_redis.pause()
    try:
        assert cache.get_product("Mug", product_json).hit is False  # times out: the breaker opens
    finally:
        private_redis.resume()
    assert cache.status() == "down"  # still open: reads skip Redis

    Product.objects.filter(name="Mug").update(price=Decimal("2.00"))
    assert not private_redis.client().exists(value_key), "the open breaker skipped the invalidation"
    # Redis failed moments ago: the miss was recorded with the write rather
    # than tried inside the transaction too (the attempt after commit counts).
    assert missed == [frozenset({"Mug"})]


@pytest.mark.hangs_redis
def test_a_write_tries_a_failing_redis_once_not_twice(private_redis, monkeypatch):
    # Inside the write's transaction and again after the commit, a hung Redis
    # cost a write two socket timeouts (~200 ms, issue 3 asks ~100 at most).
    from products import transport

    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    monkeypatch.setattr(missed_module, "hooks", [lambda names: None])
    attempts: list[bool] = []
    run = transport.run

    def counted(op, *, force=False, **options):
        if threading.current_thread() is threading.main_thread():  # not the probe's, after the miss
            attempts.append(force)
        return run(op, force=force, **options)

    monkeypatch.setattr(transport, "run", counted)
    private_redis.pause()
    try:
        assert cache.get_product("Mug", product_json).hit is False  # the breaker opens
        attempts.clear()
        Product.objects.filter(name="Mug").update(price=Decimal("2.00"))
    finally:
        private_redis.resume()
    assert attempts == [True]  # after the commit only, forced past the open breaker


@pytest.mark.hangs_redis
def test_a_missed_invalidation_is_delivered_soon_after_a_hung_redis_resumes(private_redis, monkeypatch):
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    cache.get_product("Mug", product_json)
    value_key = cachekeys.product_keys("Mug").value
    missed: list = []
    monkeypatch.setattr(missed_module, "hooks", [missed.append])

    private_redis.pause()
    try:
        Product.objects.filter(name="Mug").update(price=Decimal("2.00"))
        time.sleep(0.3)
    finally:
        private_redis.resume()
    resumed = time.monotonic()
    assert missed == [frozenset({"Mug"})]  # handed to the outbox once
    probe = private_redis.client()
    while probe.exists(value_key):  # no request: this process's probe delivers it
        assert time.monotonic() - resumed < 2.0, "the missed invalidation was not delivered"
        time.sleep(0.005)
    print(
        f"\nhung Redis: missed invalidation delivered {(time.monotonic() - resumed) * 1000:.0f} ms after resume"
    )
    assert time.monotonic() - resumed < 0.5


def test_a_connection_closed_during_its_server_check_fails_instead_of_hanging(private_redis, monkeypatch):
    # Another thread's breaker trip used to close the connection a server
    # check was adopting on; redis-py reconnected it inside the check, which
    # waited for the lock its own thread held: every thread, then every
    # worker forked from that master, hung for good.
    from products import serveridentity, transport

    adopt = serveridentity._adopt
    calls: list[str] = []

    def adopt_while_someone_closes_the_connection(connection, run_id):
        calls.append(run_id)
        if len(calls) == 1:
            connection.disconnect()
        adopt(connection, run_id)

    monkeypatch.setattr(serveridentity, "_adopt", adopt_while_someone_closes_the_connection)
    serveridentity.forget()
    transport.client().connection_pool.disconnect()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("status", cache.status()), daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive(), "the server check deadlocked"
    assert result["status"] == "down"  # that connection failed, as a timeout would
    transport.reset()
    assert cache.status() == "ok"  # the next connection checks the server and serves
    assert len(calls) == 2


@pytest.mark.parametrize(
    "module, lock",
    [
        ("products.serveridentity", "_adopt_lock"),
        ("products.missed", "pending._lock"),
        ("products.token_cache", "_missed_lock"),
    ],
)
def test_a_forked_child_never_inherits_a_held_lock(private_redis, module, lock):
    # The master's outbox applier (and the probe its failures start) may hold
    # one of these when gunicorn forks a worker: the child must not wait forever.
    import importlib
    import operator
    import os

    def held():
        return operator.attrgetter(lock)(importlib.import_module(module))

    with held():
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os._exit(0 if held().acquire(timeout=1) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_worker_forked_during_an_outage_reports_the_outage_itself(private_redis):
    # gunicorn forks a new worker from the master while Redis is down: the
    # worker must log the outage and count in the breaker gauge, or an alert
    # on product_cache_breaker_open goes quiet once every worker was replaced.
    import logging
    import os

    from prometheus_client import REGISTRY

    from products import metrics

    private_redis.stop()
    assert cache.status() == "down"  # the parent saw the outage
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        seen = []
        handler = logging.Handler()
        handler.emit = lambda record: seen.append(record.getMessage())
        logging.getLogger("products.transport").addHandler(handler)
        metrics.breaker_state(False)  # not inherited: what the child itself records
        down = cache.status() == "down"
        logged = any(message.startswith("Redis unavailable") for message in seen)
        gauge = REGISTRY.get_sample_value("product_cache_breaker_open")
        os._exit(0 if down and logged and gauge == 1 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_worker_forked_with_a_missed_invalidation_delivers_it_once_redis_returns(private_redis):
    # The fork leaves the child no probe thread. Its first command's resync
    # fails while Redis is down, and must start one: else the delivery waits
    # for a request after the back-off, and near hits stay off meanwhile.
    import os

    from products import transport

    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    private_redis.stop()
    Product.objects.filter(name="Mug").update(price=Decimal("2.00"))  # missed: pending here
    ready, go = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: never back into pytest, whatever happens
        delivered = False
        try:
            down = cache.status() == "down"  # its first command: the resync fails
            os.write(ready[1], b"1")
            os.read(go[0], 1)  # Redis is back; the child sends nothing more
            deadline = time.monotonic() + 3
            while transport._breaker._resync_needed and time.monotonic() < deadline:
                time.sleep(0.02)
            delivered = down and not transport._breaker._resync_needed
        finally:
            os._exit(0 if delivered else 1)
    os.read(ready[0], 1)
    private_redis.start()
    os.write(go[1], b"1")
    _, status = os.waitpid(pid, 0)
    for fd in (*ready, *go):
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's missed invalidation was not delivered"


def _point_at(settings, url: str, prefix: str | None = None) -> None:
    """Point the cache at ``url`` as a restart with another REDIS_URL (or CACHE_KEY_PREFIX) would."""
    from products import serveridentity, transport

    default = {**settings.CACHES["default"], "LOCATION": url}
    if prefix is not None:
        default["KEY_PREFIX"] = prefix
    settings.CACHES = {**settings.CACHES, "default": default}
    reset_process_state()
    serveridentity.forget()
    transport.client().connection_pool.disconnect()  # django-redis keeps pools by URL


def test_a_server_the_cache_left_and_came_back_to_serves_nothing_from_before(private_redis, settings):
    # REDIS_URL pointed at A, then B (a write went to B), then A again: A
    # still held the old value under its own run_id, and served it (HIT).
    from products.models import CacheServer

    from .support.redis_server import RedisProcess

    first = private_redis
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    assert cache.get_product("Mug", product_json).hit is False
    assert cache.get_product("Mug", product_json).hit is True
    _point_at(settings, first.url)  # the same server again: nothing retired, still a hit
    assert cache.get_product("Mug", product_json).hit is True
    epoch = CacheServer.objects.get().epoch

    second = RedisProcess()
    second.start()
    try:
        _point_at(settings, second.url)
        Product.objects.filter(name="Mug").update(price=Decimal("2.00"))  # invalidated on B only
        assert b'"2.00"' in cache.get_product("Mug", product_json).data
        _point_at(settings, first.url)
        product = cache.get_product("Mug", product_json)
        assert product.hit is False and b'"2.00"' in product.data
        assert CacheServer.objects.get().epoch >= epoch + 2  # B, then A again (each switch at least one more)
        Product.objects.filter(name="Mug").update(quantity=5)  # invalidated on A only
        _point_at(settings, second.url)  # and back to B, which still holds quantity 1
        product = cache.get_product("Mug", product_json)
        assert product.hit is False and b'"quantity":5' in product.data
    finally:
        second.cleanup()


@pytest.mark.parametrize("change", ["database", "key_prefix"])
def test_another_database_or_key_prefix_and_back_serves_nothing_from_before(private_redis, settings, change):
    # The same server (the same run_id): only the ledger's record of the
    # database number and key prefix tells the switch.
    here = private_redis.url
    there = here.rsplit("/", 1)[0] + "/1" if change == "database" else here
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    other_prefix = prefix + "-other" if change == "key_prefix" else None
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    cache.get_product("Mug", product_json)
    assert cache.get_product("Mug", product_json).hit is True
    _point_at(settings, there, other_prefix)
    Product.objects.filter(name="Mug").update(price=Decimal("2.00"))
    _point_at(settings, here, prefix)
    product = cache.get_product("Mug", product_json)
    assert product.hit is False and b'"2.00"' in product.data


def test_a_server_adopted_inside_a_transaction_that_rolls_back_is_not_trusted_later(private_redis, settings):
    # The ledger's bump must not roll back with the caller's transaction: it
    # is never written inside one, and the server adopted there trusts nothing.
    from django.db import transaction

    from .support.redis_server import RedisProcess

    first = private_redis
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    cache.get_product("Mug", product_json)
    second = RedisProcess()
    second.start()
    try:
        _point_at(settings, second.url)
        try:
            with transaction.atomic():
                cache.invalidate(["Other"])  # the first connection to B opens here
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        Product.objects.filter(name="Mug").update(price=Decimal("2.00"))  # on B only
        _point_at(settings, first.url)
        product = cache.get_product("Mug", product_json)
        assert product.hit is False and b'"2.00"' in product.data
    finally:
        second.cleanup()


def test_the_same_server_met_first_inside_a_transaction_is_adopted_without_an_outage(
    private_redis, settings, caplog
):
    # Only a switch of server needs the ledger written (never inside a
    # transaction); the same server is a read, so a worker whose first Redis
    # call is a write's invalidation does not report an outage.
    import logging

    from django.db import transaction

    cache.get_product("Nothing", product_json)  # the ledger now names this server
    _point_at(settings, private_redis.url)  # a fresh process, the same server
    caplog.set_level(logging.WARNING, logger="products")
    with transaction.atomic():
        assert cache.invalidate(["Mug"]) is True
    assert "Redis unavailable" not in caplog.text


@pytest.mark.slow
def test_a_write_from_a_process_on_another_redis_reaches_the_served_one_within_a_second(sqlite_gunicorn):
    # An operator's shell with another REDIS_URL that answers: its save
    # invalidated there, and the workers' open connections to the served
    # Redis went on answering the old price (HIT) until the 60 s timeout.
    # Each server process's applier now sees the ledger moved and checks
    # its server again, which retires every bucket marked before.
    from .support.processes import BASE_DIR
    from .support.redis_server import RedisProcess

    served, other = RedisProcess(), RedisProcess()
    served.start()
    other.start()
    try:
        server = sqlite_gunicorn(workers=2, REDIS_URL=served.url)
        created = "from products.models import Product; Product.objects.create(name='Mug', price='1.00', quantity=1)"
        assert manage(server.env, "shell", "-c", created).returncode == 0
        session = requests.Session()
        for _ in range(20):  # a HIT in every worker
            session.get(server.url + "/api/products/Mug/", timeout=5)
        assert session.get(server.url + "/api/products/Mug/", timeout=5).headers["X-Cache"] == "HIT"

        # Two saves, seconds apart, from one shell: its second write does not
        # move the record again (it stays on its server), so it re-checks itself.
        saves = (
            "import time; from products.models import Product\n"
            "p = Product.objects.get(name='Mug'); p.price = '2.00'; p.save(); print('saved', flush=True)\n"
            "time.sleep(2.5)\n"
            "p = Product.objects.get(name='Mug'); p.price = '3.00'; p.save(); print('saved', flush=True)\n"
        )
        shell = subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-v", "0", "-c", saves],
            cwd=BASE_DIR,
            env={**server.env, "REDIS_URL": other.url},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            for price in ("2.00", "3.00"):
                assert shell.stdout.readline().strip() == "saved"
                acknowledged = time.monotonic()
                for _ in range(20):  # read (and re-fill) right after the write
                    session.get(server.url + "/api/products/Mug/", timeout=5)
                last_stale = None
                while time.monotonic() - acknowledged < 2:
                    if session.get(server.url + "/api/products/Mug/", timeout=5).json()["price"] != price:
                        last_stale = time.monotonic() - acknowledged
                    time.sleep(0.01)
                assert last_stale is None or last_stale < 1.5, (
                    f"{price}: stale {last_stale:.2f} s after the write"
                )
        finally:
            shell.wait(timeout=30)
    finally:
        served.cleanup()
        other.cleanup()


def test_processes_moving_the_server_record_back_and_forth_warn_once_a_minute(caplog):
    # Two deployments on one database with different CACHE_KEY_PREFIX move
    # the record every poll: safe (each check retires the other's buckets),
    # but a WARNING every second from every process was a flood.
    from products import serverledger

    serverledger.reset()
    with caplog.at_level(logging.DEBUG, logger="products.cache"):
        for epoch in range(6):
            serverledger._report_recheck("abc/0/prefix", epoch)
    # The first is a restart or a failover as far as anyone can tell: no blame.
    assert caplog.records[0].levelno == logging.INFO
    assert "a restart, a failover, or a process with other Redis settings" in caplog.records[0].getMessage()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "must share REDIS_URL" in warnings[0].getMessage()
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 4


def test_redis_restarting_twice_within_a_minute_is_news_not_a_settings_mistake(caplog):
    # Each restart has a new run_id: no server is met twice, so no blame for
    # "other Redis settings" (it was said on the second restart within a minute).
    from products import serverledger

    serverledger.reset()
    with caplog.at_level(logging.DEBUG, logger="products.cache"):
        for restart in range(3):
            serverledger._report_recheck(f"run{restart}/0/prefix", restart + 1)
    assert [r.levelno for r in caplog.records] == [logging.INFO] * 3


def test_a_fresh_redis_is_news_and_one_restarted_from_old_data_is_a_warning(
    private_redis, make_product, caplog
):
    make_product("Mug")
    with caplog.at_level(logging.INFO, logger="products.cache"):
        assert cache.get_product("Mug", product_json) is not None  # first use: nothing to distrust
    first = [(r.levelno, r.getMessage()) for r in caplog.records if "is new to this cache" in r.getMessage()]
    assert [level for level, _ in first] == [logging.INFO], first
    assert "holds no marks of it" in first[0][1]

    caplog.clear()
    client = private_redis.client()
    marks = {key: client.get(key) for key in client.scan_iter("*:srv")}
    assert marks
    for key in marks:
        client.set(key, b"another-server")  # as a snapshot from another server instance would hold
    with caplog.at_level(logging.INFO, logger="products.cache"):
        transport.check_servers_again()  # a new connection, checked again
    again = [r for r in caplog.records if "is new to this cache" in r.getMessage()]
    assert [r.levelno for r in again] == [logging.WARNING]
    assert "256 bucket generation(s) retired" in again[0].getMessage()
