"""A server process imports only what it uses (worker memory, issue 15)."""

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
    names = ["psycopg", "psycopg2", "requests", "yaml", "pygments", "jinja2", "django.test",
             "drf_spectacular.openapi", "drf_spectacular.views"]
    print(json.dumps({"codes": codes, "loaded": [n for n in names if n in sys.modules]}))
    """
)


@pytest.mark.django_db(transaction=True)
def test_a_worker_on_sqlite_loads_no_driver_test_client_or_schema_generator(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "productsite.settings",
        "SECRET_KEY": "test-only",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "LOG_LEVEL": "ERROR",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=BASE_DIR, env=env, check=True)
    out = subprocess.run(
        [sys.executable, "-c", _WORKER], cwd=BASE_DIR, env=env, check=True, capture_output=True, text=True
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["codes"] == ["404", "200", "200"]
    assert report["loaded"] == []


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/", "/api/redoc/"])
def test_docs_still_load_their_views_on_demand(client, path):
    response = client.get(path)
    assert response.status_code == 200
    if path == "/api/schema/":
        paths = json.loads(client.get(path, HTTP_ACCEPT="application/vnd.oai.openapi+json").content)["paths"]
        assert {"/api/products/", "/api/products/{name}/", "/health/"} <= set(paths)
