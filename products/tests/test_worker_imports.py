"""A server process imports only what it uses and keeps its heap small (worker memory, issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from .support.processes import BASE_DIR

# A worker: load the WSGI application and answer the common requests.
_WORKER = textwrap.dedent(
    """
    import io, json, sys
    from productsite.wsgi import application
    loaded_with_the_app = set(sys.modules)

    def get(path, query=""):
        environ = {
            "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1",
            "REMOTE_ADDR": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "HTTP_ACCEPT": "application/json",
        }
        statuses = []
        b"".join(application(environ, lambda status, headers, *rest: statuses.append(status)))
        return statuses[0][:3]

    codes = [get("/api/products/nothing-here/"), get("/api/products/", "format=json"), get("/health/")]
    names = ["psycopg", "psycopg2", "django.contrib.postgres", "django.db.backends.postgresql", "requests", "yaml", "pygments", "jinja2", "django.test",
             "drf_spectacular.openapi", "drf_spectacular.views"]
    print(json.dumps({
        "codes": codes, "loaded": [n for n in names if n in sys.modules],
        "imported_by_requests": sorted(set(sys.modules) - loaded_with_the_app),
    }))
    """
)


# A worker's heap: the objects loaded with the application frozen, and no
# glibc malloc arena per thread (a thread arena is a 64 MiB-aligned mapping,
# read-write at the start, reserved for the rest of its 64 MiB).
_HEAP = textwrap.dedent(
    """
    import gc, json, sys, threading
    from productsite.wsgi import application

    kept = []
    thread = threading.Thread(target=lambda: kept.append([bytes(2000) for _ in range(2000)]))
    thread.start()
    thread.join()

    HEAP = 64 << 20
    anon = []
    for line in open("/proc/self/maps"):
        fields = line.split()
        if len(fields) == 5:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            anon.append((start, end, fields[1]))
    arenas = sum(
        1 for (start, end, perm), after in zip(anon, anon[1:] + [(0, 0, "")])
        if perm == "rw-p" and start % HEAP == 0 and after == (end, start + HEAP, "---p")
    )
    from django.core.cache import caches
    from django.db import connections
    from productsite import fastcreate, fastpath
    first_use = ("django.db.models.sql.compiler", "django.contrib.messages.storage.fallback",
                 "django.contrib.sessions.serializers", "django_redis.serializers.pickle", "encodings.idna")
    print(json.dumps({
        "first_use": [n for n in first_use if n in sys.modules],
        "fast_paths_checked": [fastpath.setup().mirrored, fastcreate._setup.mirrored],
        "redis_clients": [c is not None for c in caches["default"].client._clients],
        "frozen": gc.get_freeze_count(), "thread_arenas": arenas,
        "loaded": [n for n in ("productsite.urls", "products.views", "django_redis.client") if n in sys.modules],
        "open_connections": [c.alias for c in connections.all() if c.connection is not None],
    }))
    """
)


def _sqlite_env(tmp_path, **extra):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "productsite.settings",
        "SECRET_KEY": "test-only",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "LOG_LEVEL": "ERROR",
        **extra,
    }
    env.pop("MALLOC_ARENA_MAX", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=BASE_DIR, env=env, check=True)
    return env


def _run(script, env):
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.django_db(transaction=True)
def test_a_worker_on_sqlite_loads_no_driver_test_client_or_schema_generator(tmp_path):
    report = _run(_WORKER, _sqlite_env(tmp_path))
    assert report["codes"] == ["404", "200", "200"]
    assert report["loaded"] == []
    # What the first requests import is loaded with the application (shared
    # with the workers under preload_app), not by each worker.
    assert report["imported_by_requests"] == []


@pytest.mark.parametrize(("arenas", "thread_arenas"), [("1", 0), ("0", None)])
@pytest.mark.django_db(transaction=True)
def test_a_worker_freezes_its_loaded_heap_and_keeps_threads_in_one_malloc_arena(
    tmp_path, arenas, thread_arenas
):
    report = _run(_HEAP, _sqlite_env(tmp_path, WORKER_MALLOC_ARENAS=arenas))
    # Django, DRF, redis-py and the app: ~70,000 objects the collector tracks,
    # with what the first requests would load (shared under preload_app).
    assert report["frozen"] > 50_000
    assert report["loaded"] == ["productsite.urls", "products.views", "django_redis.client"]
    # A preloading master forks its workers from here: no connection to inherit.
    assert report["open_connections"] == []
    assert report["redis_clients"] == [False]
    # What the first hot read, list and create would load, short of connecting.
    assert len(report["first_use"]) == 5
    assert report["fast_paths_checked"] == [True, True]
    if thread_arenas is None:  # glibc's default: the threads got arenas of their own
        assert report["thread_arenas"] >= 1
    else:
        assert report["thread_arenas"] == thread_arenas


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/", "/api/redoc/"])
def test_docs_still_load_their_views_on_demand(client, path):
    response = client.get(path)
    assert response.status_code == 200
    if path == "/api/schema/":
        paths = json.loads(client.get(path, HTTP_ACCEPT="application/vnd.oai.openapi+json").content)["paths"]
        assert {"/api/products/", "/api/products/{name}/", "/health/"} <= set(paths)


@pytest.mark.django_db
def test_a_product_read_from_the_database_holds_only_its_own_bytes():
    # orjson hands over its 4 KiB buffer; a worker keeps ~2,000 of these
    # (near cache, fast path answers) after a random walk.
    import tracemalloc
    from decimal import Decimal

    from products import selectors
    from products.models import Product
    from products.selectors import product_json, products_json

    Product.objects.create(name="held", price=Decimal("1.50"), quantity=2)
    product_json("held")  # the query is compiled once per connection
    products_json(["held"])  # and the ORM caches what it looked up
    kept, held = [], []
    for read in (lambda: product_json("held"), lambda: products_json(["held"])["held"]):
        # The least of three reads: a 4 KiB buffer kept would show in each;
        # another thread's allocation in the same file (seen once in a full
        # run on a loaded machine: 1,913 bytes) in one at most.
        attempts = []
        for _ in range(3):
            tracemalloc.start()
            try:
                value = read()
                snapshot = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            # Only what selectors.py allocated and still holds: the ORM's own
            # caches and other threads' allocations (the outbox applier) vary by
            # run and are not the point here.
            mine = snapshot.filter_traces([tracemalloc.Filter(True, selectors.__file__)])
            attempts.append(sum(trace.size for trace in mine.traces))
            del snapshot, mine
        kept.append(value)
        held.append(min(attempts))
    assert kept[0] == kept[1] and b'"name":"held"' in kept[0]
    assert 0 < held[0] < 1024, held
    assert 0 < held[1] < 1024, held
