"""Shared fixtures: real Redis, real database, real servers.

The helpers behind them live in products/tests/support/.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client as DjangoClient
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from products import serverledger
from products.models import Product

from .support.cache_state import forget_pools, fresh_product_cache, reset_process_state
from .support.gunicorn import Gunicorn, start_sqlite_gunicorn
from .support.redis_server import RedisProcess

# The Sentinel set and the Redis Cluster: defined here once, so the whole run shares one of each.
from .support.redis_topologies import redis_cluster, redis_sentinel  # noqa: F401
from .support.users import make_user, token_client


@pytest.fixture(autouse=True)
def _fresh_product_cache():
    """Every test starts with no cached products of this run and a closed breaker."""
    fresh_product_cache()
    yield
    reset_process_state()


@pytest.fixture(scope="session", autouse=True)
def _served_like_a_server_process():
    """This process stands for a server process, whose applier re-checks the Redis server every poll.

    A one-off process (a shell, an import) re-checks after each delivered
    write instead: an extra query the write paths' query counts here would
    include. The subprocess tests (test_cache_restarts) run that path.
    """
    serverledger.polled_in_pid = os.getpid()
    yield
    serverledger.polled_in_pid = None


@pytest.fixture(scope="session", autouse=True)
def _ctrl_c_as_a_terminal_delivers_it():
    """Give this process, and the commands it starts, Python's own SIGINT handling.

    A run started with SIGINT ignored (scripts/test.sh's PostgreSQL pass is a
    background job, and bash starts those so) would otherwise pass that on to
    every command a test starts, and the Ctrl-C tests would test nothing.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture(scope="session", autouse=True)
def _forget_run_keys_at_end():
    """Delete this run's keys (its own prefix) when the session ends."""
    yield
    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start : start + 1000])


# --- Users and clients ---------------------------------------------------------


@pytest.fixture
def editor(db) -> User:
    """A user allowed to add, change and delete products."""
    return make_user("editor", "add_product", "change_product", "delete_product")


@pytest.fixture
def plain_user(db) -> User:
    """An authenticated user with no product permissions."""
    return make_user("plain")


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def editor_client(editor) -> APIClient:
    return token_client(editor)


@pytest.fixture
def plain_client(plain_user) -> APIClient:
    return token_client(plain_user)


@pytest.fixture
def editor_token(editor) -> str:
    return Token.objects.get_or_create(user=editor)[0].key


@pytest.fixture
def make_product(db):
    def make(name: str = "Widget", price: str = "19.99", quantity: int = 5) -> Product:
        return Product.objects.create(name=name, price=price, quantity=quantity)

    return make


# --- Processes: a throwaway redis-server, a real gunicorn ------------------------


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def private_redis(request, redis_process, settings) -> Iterator[RedisProcess]:
    """Point the Django cache at a throwaway redis-server for this test.

    Its socket timeout is the shared Redis's patient one (test_settings.py):
    refusals, kills, a full Redis and the rest fail at once whatever the
    timeout, and the healthy moments around them must not turn into a miss
    on a loaded machine. A test marked ``hangs_redis`` (it pauses the server)
    gets production's timeout: what a hang costs is what it tests.
    """
    if request.node.get_closest_marker("hangs_redis"):
        timeout = settings.PRODUCTION_REDIS_SOCKET_TIMEOUT
    else:
        timeout = settings.SHARED_REDIS_SOCKET_TIMEOUT

        def unmarked_pause() -> None:
            pytest.fail("a test that pauses private_redis must be marked hangs_redis (production's timeout)")

        redis_process.pause = unmarked_pause
    options = {
        **settings.CACHES["default"]["OPTIONS"],
        "SOCKET_TIMEOUT": timeout,
        "SOCKET_CONNECT_TIMEOUT": timeout,
    }
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "LOCATION": redis_process.url, "OPTIONS": options}
    settings.CACHES = caches
    settings.REDIS_URL = redis_process.url
    settings.REDIS_SOCKET_TIMEOUT = timeout
    forget_pools(redis_process.url)  # an earlier test's server on this port, with its timeout
    reset_process_state()
    yield redis_process
    reset_process_state()


@pytest.fixture
def sqlite_gunicorn(tmp_path) -> Iterator[Callable[..., Gunicorn]]:
    """Start gunicorn on a fresh, migrated SQLite file; yields a starter."""
    started: list[Gunicorn] = []

    def start(workers: int = 3, threads: int = 1, **env: str) -> Gunicorn:
        server = start_sqlite_gunicorn(tmp_path / "served.sqlite3", workers=workers, threads=threads, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --- The second database pass ---------------------------------------------------

# What asks pytest-django for the test database.
DATABASE_FIXTURES = {
    "db",
    "transactional_db",
    "django_db_reset_sequences",
    "django_db_serialized_rollback",
    "live_server",
}


# The files whose tests mostly wait on Redis, Sentinel and Cluster processes
# of their own (starts, kills, failovers). scripts/test.sh runs them in a
# lane of their own beside the rest of the pass (TEST_LANE): the waits
# overlap the rest's work instead of adding to it.
REDIS_PROCESS_LANE = frozenset(
    {
        "test_cache_cluster_keys.py",
        "test_cache_outbox_processes.py",
        "test_cache_restarts.py",
        "test_near_cache_cluster.py",
        "test_redis_failover.py",
        "test_redis_tls.py",
        "test_redis_topologies.py",
    }
)
TEST_LANES = ("redis-processes", "rest")


def pytest_collection_modifyitems(config, items):
    """Keep the tests of this run's lane and pass (scripts/test.sh sets both)."""
    lane = os.environ.get("TEST_LANE")
    if lane:
        if lane not in TEST_LANES:
            raise pytest.UsageError(f"TEST_LANE must be one of {', '.join(TEST_LANES)}, not {lane!r}")
        missing = sorted(name for name in REDIS_PROCESS_LANE if not (Path(__file__).parent / name).is_file())
        if missing:  # a renamed file would silently change lanes
            raise pytest.UsageError(f"REDIS_PROCESS_LANE names files that do not exist: {missing}")
        _deselect(
            config,
            items,
            [item for item in items if (item.path.name in REDIS_PROCESS_LANE) != (lane == "redis-processes")],
        )
    if os.environ.get("DATABASE_INDEPENDENT_TESTS") == "skip":
        _deselect_database_independent(config, items)


def _deselect(config, items, left_out: list) -> None:
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        gone = set(left_out)
        items[:] = [item for item in items if item not in gone]


def _deselect_database_independent(config, items) -> None:
    """On scripts/test.sh's PostgreSQL pass, leave out what the SQLite pass already ran the same.

    A test marked ``database_independent`` gives every server and command it
    starts a database of its own (or none), so the pass's database never
    reaches it; unless it also asks for the test database, it runs once.
    """
    once = [
        item
        for item in items
        if item.get_closest_marker("database_independent")
        and not item.get_closest_marker("django_db")
        and not DATABASE_FIXTURES.intersection(item.fixturenames)
    ]
    _deselect(config, items, once)


# --- Reports for fixtures (the browser tests save artifacts on failure) ------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (item.rep_setup, rep_call, rep_teardown)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def served_schema(django_db_setup, django_db_blocker) -> dict:
    """The OpenAPI schema the service serves, as JSON (the generated-client tests start from it)."""
    with django_db_blocker.unblock():
        response = DjangoClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return json.loads(response.content)
