"""Production configuration: check --deploy, collectstatic, static files with DEBUG off."""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import sys
import time

import pytest
import requests

from .support.processes import BASE_DIR, child_pids, free_port, manage, server_env

# Every server and command here gets a database of its own (or none): the
# PostgreSQL pass of scripts/test.sh leaves these tests to the SQLite pass.
pytestmark = pytest.mark.database_independent

PRODUCTION = {
    "DEBUG": "0",
    "ALLOWED_HOSTS": "api.example.com",
    "USE_X_FORWARDED_PROTO": "1",
    "SECURE_SSL_REDIRECT": "1",
    "SESSION_COOKIE_SECURE": "1",
    "CSRF_COOKIE_SECURE": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
}


def test_check_deploy_is_clean_with_production_values():
    env = server_env(SECRET_KEY=secrets.token_urlsafe(50), **PRODUCTION)
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_an_insecure_configuration():
    # The same command is not vacuous: without the HTTPS settings it fails.
    env = server_env(SECRET_KEY=secrets.token_urlsafe(50), DEBUG="0", ALLOWED_HOSTS="api.example.com")
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("REDIS_SOCKET_TIMEOUT", " 0.25 ", 0.25),
        ("PRODUCT_CACHE_ENABLED", "off", False),
        ("PRODUCT_CACHE_ENABLED", "Yes", True),
        ("PRODUCT_NEAR_CACHE", "0", False),
        ("DEBUG", "", False),
    ],
)
def test_settings_read_the_usual_spellings_of_numbers_and_switches(variable, value, expected):
    code = f"from django.conf import settings; print(repr(settings.{variable}))"
    result = manage(server_env(**{variable: value}), "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == repr(expected)


def test_settings_refuse_to_start_without_a_secret_key():
    env = server_env(DEBUG="0")
    env.pop("SECRET_KEY")
    result = manage(env, "check")
    assert result.returncode != 0 and "SECRET_KEY is not set" in result.stderr
    # An operator's mistake gets one line naming it, not a traceback.
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


@pytest.mark.parametrize(
    "variable, value, says",
    [
        ("PRODUCT_CACHE_TIMEOUT", "abc", "PRODUCT_CACHE_TIMEOUT: 'abc' is not a valid value"),
        ("REDIS_SOCKET_TIMEOUT", "0", "REDIS_SOCKET_TIMEOUT: 0.0 is out of range; it must be greater than 0"),
        ("PAGE_SIZE", "-1", "PAGE_SIZE: -1 is out of range; it must be at least 1 and at most 500"),
        # Above the page limit a list quietly held 500 (a review).
        ("PAGE_SIZE", "501", "PAGE_SIZE: 501 is out of range; it must be at least 1 and at most 500"),
        ("PRODUCT_CACHE_LEASE_TIMEOUT", "0", "PRODUCT_CACHE_LEASE_TIMEOUT: 0.0 is out of range"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL: 'LOUD' is not one of"),
        ("DATABASE_URL", "postgres://u:secret@h:notaport/x", "DATABASE_URL is not a valid database URL"),
        ("DATABASE_URL", "mysql://u:secret@h/x", "DATABASE_URL: only sqlite:///path and postgres://"),
        # django-environ read "100ms" as 100 seconds and any unknown word as off.
        ("REDIS_SOCKET_TIMEOUT", "100ms", "REDIS_SOCKET_TIMEOUT: '100ms' is not a valid value"),
        ("PRODUCT_CACHE_BACKOFF", "1,5", "PRODUCT_CACHE_BACKOFF: '1,5' is not a valid value"),
        ("SQLITE_BUSY_TIMEOUT", "nan", "SQLITE_BUSY_TIMEOUT: 'nan' is not a valid value"),
        ("PRODUCT_CACHE_ENABLED", "maybe", "PRODUCT_CACHE_ENABLED: 'maybe' is not a valid value"),
        ("SECURE_SSL_REDIRECT", "enabled", "SECURE_SSL_REDIRECT: 'enabled' is not a valid value"),
        # A page cache of "--1" KiB made every SQLite connection fail; a body limit of -1 refused every POST.
        ("SQLITE_CACHE_KIB", "-1", "SQLITE_CACHE_KIB: -1 is out of range; it must be at least 0"),
        ("DATA_UPLOAD_MAX_MEMORY_SIZE", "-1", "DATA_UPLOAD_MAX_MEMORY_SIZE: -1 is out of range"),
        # PostgreSQL reads a lock_timeout of 0 as "wait for ever".
        ("DATABASE_LOCK_TIMEOUT", "-1", "DATABASE_LOCK_TIMEOUT: -1.0 is out of range; it must be at least 0"),
        # Read on SQLite too: a mistake shows before the move to PostgreSQL.
        ("DATABASE_LOCK_TIMEOUT", "x", "DATABASE_LOCK_TIMEOUT: 'x' is not a valid value"),
        # django-environ's own UserWarning came first, on two lines of its own.
        ("DATABASE_URL", "notaurl", "DATABASE_URL: only sqlite:///path and postgres://"),
        ("PROMETHEUS_MULTIPROC_DIR", "/proc/nope", "PROMETHEUS_MULTIPROC_DIR: '/proc/nope': cannot create"),
    ],
)
def test_a_malformed_or_out_of_range_setting_is_one_line_naming_it(variable, value, says):
    # PAGE_SIZE=-1 served a list whose "next" pointed at itself; a lease of 0 s
    # made every read a Redis error; a bad number was a 40-line traceback.
    env = server_env(**{variable: value})
    if variable.startswith("SQLITE_"):  # read only on SQLite (the suite also runs on PostgreSQL)
        env["DATABASE_URL"] = "sqlite:////nonexistent/never-opened.sqlite3"
    result = manage(env, "check")
    assert result.returncode == 1, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "secret" not in result.stderr  # a database URL's password is never echoed


@pytest.mark.parametrize(
    "variable, value, says",
    [
        ("GUNICORN_TIMEOUT", "soon", "GUNICORN_TIMEOUT: 'soon' is not a whole number"),
        # No workers: gunicorn listened and every request hung.
        ("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY: '0' is not a whole number >= 1"),
        ("GUNICORN_THREADS", "0", "GUNICORN_THREADS: '0' is not a whole number >= 1"),
        # A 30-line traceback from bind(), and a message not naming PORT.
        ("PORT", "99999", "PORT: '99999' is not a whole number from 1 to 65535"),
        ("PORT", "abc", "PORT: 'abc' is not a whole number from 1 to 65535"),
        # Taken as "on".
        ("GUNICORN_PRELOAD", "maybe", "GUNICORN_PRELOAD: 'maybe' is not one of"),
        # The app's own, read once this file made its metrics directory.
        ("PAGE_SIZE", "0", "PAGE_SIZE: 0 is out of range"),
    ],
)
def test_gunicorn_refuses_a_malformed_setting_of_its_own_in_one_line(variable, value, says, tmp_path):
    env = server_env(**{variable: value}, TMPDIR=str(tmp_path))
    command = [sys.executable, "-m", "gunicorn", "productsite.wsgi:application", "-c", "gunicorn.conf.py"]
    if variable != "PORT":
        command += ["--bind", f"127.0.0.1:{free_port()}"]
    result = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 4, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert list(tmp_path.iterdir()) == []  # its metrics directory removed, though on_exit never ran


@pytest.mark.slow
def test_gunicorn_takes_its_own_settings_from_the_env_file_too(tmp_path):
    # The README: a .env fills in what the environment leaves unset. Django
    # read it, gunicorn.conf.py did not (it listened on 8000 with 2 x cores + 1 workers).
    env_file = tmp_path / ".env"
    env = server_env(ENV_FILE=str(env_file), DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    env.pop("GUNICORN_BIND", None)
    env.pop("PORT", None)
    command = [sys.executable, "-m", "gunicorn", "productsite.wsgi:application"]
    for _ in range(3):  # another port when the one free_port() chose was taken since
        port = free_port()
        env_file.write_text(f"GUNICORN_BIND=127.0.0.1:{port}\nWEB_CONCURRENCY=1\n")
        server = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            response = _first_answer(server, f"http://127.0.0.1:{port}/health/live/")
            if response is None:
                continue
            assert response.status_code == 200
            assert len(child_pids(server.pid)) == 1  # WEB_CONCURRENCY from the file
            return
        finally:
            server.terminate()
            server.wait(timeout=30)
    pytest.fail(f"gunicorn exited at start three times:\n{server.stderr.read().decode()}")


def _first_answer(server: subprocess.Popen, url: str) -> requests.Response | None:
    """Wait up to 30 s for ``url`` to answer; None if the server exits first."""
    deadline = time.monotonic() + 30
    while server.poll() is None:
        try:
            return requests.get(url, timeout=1)
        except requests.RequestException:
            assert time.monotonic() < deadline, "gunicorn did not answer within 30 s"
            time.sleep(0.05)
    return None


@pytest.mark.parametrize("preload", ["1", "0"])
def test_gunicorn_refuses_to_start_without_a_secret_key(preload):
    env = server_env(DEBUG="0", GUNICORN_PRELOAD=preload)
    env.pop("SECRET_KEY")
    command = [sys.executable, "-m", "gunicorn", "productsite.wsgi:application"]
    command += ["--bind", f"127.0.0.1:{free_port()}", "--workers", "1"]
    result = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 4  # gunicorn's "application failed to load": no restart loop
    assert "configuration error: SECRET_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_before_collectstatic_the_pages_render_and_their_files_come_from_the_apps(sqlite_gunicorn, tmp_path):
    # Django's manifest storage raises for every {% static %} without the
    # manifest: the admin, the docs and the browsable API answered 500.
    server = sqlite_gunicorn(workers=1, DEBUG="0", STATIC_ROOT=str(tmp_path / "never-collected"))
    for page in ("/admin/login/", "/api/docs/", "/api/redoc/", "/api-auth/login/"):
        response = requests.get(server.url + page, timeout=5)
        assert response.status_code == 200, (page, response.text[:200])
        assets = [a for a in re.findall(r'(?:src|href)="(/static/[^"]+)"', response.text)]
        assert assets, page
        for asset in assets:
            served = requests.get(server.url + asset, timeout=5)
            assert served.status_code == 200 and served.content, asset
    assert requests.get(server.url + "/static/admin/css/nothing.css", timeout=5).status_code == 404


@pytest.mark.slow
def test_static_files_are_served_compressed_and_hashed_with_debug_off(sqlite_gunicorn, tmp_path):
    static_root = tmp_path / "static"
    collected = manage(server_env(STATIC_ROOT=str(static_root)), "collectstatic", "--noinput", "-v", "0")
    assert collected.returncode == 0, collected.stderr
    assert (static_root / "staticfiles.json").exists()

    # DEBUG off, no SSL redirect (gunicorn is reached over plain HTTP here).
    server = sqlite_gunicorn(workers=1, DEBUG="0", STATIC_ROOT=str(static_root))

    docs = requests.get(server.url + "/api/docs/", timeout=5)
    assert docs.status_code == 200
    # Every asset of the docs page comes from this server, under a hashed name.
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert len(assets) >= 3, docs.text
    assert all(a.startswith("/static/") for a in assets), assets
    assert "http://" not in docs.text and "https://" not in docs.text
    assert all(re.search(r"\.[0-9a-f]{12}\.", a) for a in assets), assets

    login = requests.get(server.url + "/api-auth/login/", timeout=5)
    assert login.status_code == 200
    for path in [*assets, "/static/admin/css/base.css", "/static/rest_framework/css/bootstrap.min.css"]:
        if path in ("/static/admin/css/base.css", "/static/rest_framework/css/bootstrap.min.css"):
            # The template tags of a DEBUG-off page point at hashed names.
            manifest = (static_root / "staticfiles.json").read_text()
            assert path.removeprefix("/static/") in manifest
        response = requests.get(server.url + path, headers={"Accept-Encoding": "gzip"}, timeout=5)
        assert response.status_code == 200, path
    script = next(a for a in assets if a.endswith(".js"))
    hashed = requests.get(server.url + script, headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert "max-age=315360000" in hashed.headers["Cache-Control"]  # immutable, hashed name
    assert hashed.headers.get("Content-Encoding") == "gzip"

    # No traceback and JSON errors under the API with DEBUG off.
    missing = requests.get(server.url + "/api/nope/", timeout=5)
    assert missing.status_code == 404 and missing.json() == {"detail": "Not found."}


@pytest.mark.django_db
def test_ssl_redirect_spares_the_load_balancer_health_check(settings):
    from django.test import Client

    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    assert client.get("/health/").status_code == 200
    redirected = client.get("/api/products/")
    assert redirected.status_code == 301 and redirected["Location"].startswith("https://")
    # Behind the proxy, a request that came in over https is served.
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert Client().get("/api/products/", HTTP_X_FORWARDED_PROTO="https").status_code == 200


def test_gunicorn_config_reads_the_environment(monkeypatch):
    import runpy

    from .support.processes import BASE_DIR

    monkeypatch.setenv("WEB_CONCURRENCY", "7")
    monkeypatch.setenv("GUNICORN_THREADS", "3")
    monkeypatch.setenv("GUNICORN_TIMEOUT", "45")
    monkeypatch.setenv("PORT", "9001")
    # Given, so the config neither makes a directory nor sets it in this process.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/metrics")
    config = runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))
    assert (config["workers"], config["threads"], config["timeout"]) == (7, 3, 45)
    assert config["bind"] == "127.0.0.1:9001"  # loopback unless GUNICORN_BIND says otherwise
    monkeypatch.setenv("GUNICORN_BIND", "0.0.0.0:9002")
    assert runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))["bind"] == "0.0.0.0:9002"
    # The app logs each request once; gunicorn's access log only when asked for.
    assert config["keepalive"] > 0 and config["accesslog"] is None and config["errorlog"] == "-"
    monkeypatch.setenv("GUNICORN_ACCESS_LOG", "-")
    assert runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))["accesslog"] == "-"
    # Workers forked from a loaded master share its heap (worker memory); off on request.
    assert config["preload_app"] is True
    monkeypatch.setenv("GUNICORN_PRELOAD", "0")
    assert runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))["preload_app"] is False


@pytest.mark.parametrize(
    "value, options", [(None, "-c lock_timeout=10000"), ("2.5", "-c lock_timeout=2500"), ("0", None)]
)
def test_the_postgresql_lock_timeout_is_a_connection_option_unless_turned_off(value, options):
    # 0 leaves it to the database role: PgBouncer refuses the "options" startup parameter.
    env = server_env(DATABASE_URL="postgres://postgres@127.0.0.1:5432/never-opened")
    if value is not None:
        env["DATABASE_LOCK_TIMEOUT"] = value
    code = "from django.conf import settings; print(settings.DATABASES['default'].get('OPTIONS', {}).get('options'))"
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(options)


def test_gunicorn_takes_no_script_name_from_a_request_header(sqlite_gunicorn):
    # gunicorn's default forwarder_headers believed a SCRIPT_NAME header from
    # FORWARDED_ALLOW_IPS peers (loopback by default): a prefix
    # the path did not start with was gunicorn's own 500, one it did start
    # with moved the route and the URLs the API writes.
    server = sqlite_gunicorn(workers=1)
    for prefix in ("/zzz", "/api"):
        response = requests.get(server.url + "/api/products/", headers={"SCRIPT_NAME": prefix}, timeout=5)
        assert response.status_code == 200, (prefix, response.status_code, response.text[:200])
        assert "results" in response.json()


def _raw_request(url: str, data: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send bytes as they are (no client library tidies them); return the status line, headers and body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}, body


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        # A request line over gunicorn's limit (4,094 bytes): 414.
        (b"GET /api/products/?search=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414),
        # A header over its field size limit (8,190 bytes): 431.
        (b"GET /health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        # A control character in a header value: 400.
        (b"GET /health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: x\x7fy\r\n\r\n", 400),
        # A request line that is not HTTP: 400.
        (b"GET\x01 / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),
    ],
    ids=["request-line-too-long", "header-too-large", "control-character-in-a-header", "malformed-method"],
)
def test_a_request_gunicorn_refuses_itself_is_a_json_error_with_a_request_id(
    sqlite_gunicorn, tmp_path, request_bytes, status
):
    # gunicorn answers these before the application runs; gunicorn.conf.py
    # makes its answer the API's error shape (productsite.gunicorn_errors).
    log = tmp_path / "server.log"
    server = sqlite_gunicorn(workers=1, output=log, LOG_LEVEL="INFO")
    line, headers, body = _raw_request(server.url, request_bytes)
    assert line.split()[1] == str(status), line
    assert headers["content-type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    assert int(headers["content-length"]) == len(body)
    detail = json.loads(body)["detail"]
    assert isinstance(detail, str) and detail
    # The id the client got is in the request log (gunicorn's line names none).
    deadline = time.monotonic() + 5
    while f"status={status} " not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"request_id={headers['x-request-id']}" in log.read_text()
    # The server is still serving.
    assert requests.get(server.url + "/health/", timeout=5).status_code == 200


def test_a_body_that_stalls_past_the_worker_timeout_is_a_408_not_a_500(sqlite_gunicorn):
    # A sync worker reading a body that stops arriving is aborted by gunicorn
    # at its timeout, inside the request; gunicorn then answered 500 (a review).
    server = sqlite_gunicorn(workers=1, GUNICORN_TIMEOUT="2")
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(
            b"POST /api/products/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"name": "Stalled", "price": "1"}'
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n", 1)[0] == b"HTTP/1.1 408 Request Timeout", head
    assert json.loads(body)["detail"].startswith("Request Timeout: the request was not complete")
    # A new worker serves on.
    assert requests.get(server.url + "/health/", timeout=10).status_code == 200


def test_check_says_when_gunicorns_refusals_would_stay_html(monkeypatch):
    from django.core.checks import run_checks
    from gunicorn import util

    assert not [m for m in run_checks() if m.id == "productsite.W003"]

    def write_error(sock, status_int, reason, mesg, extra):  # a gunicorn whose writer changed shape
        raise AssertionError("never called")

    monkeypatch.setattr(util, "write_error", write_error)
    assert [m.id for m in run_checks() if m.id == "productsite.W003"] == ["productsite.W003"]
    from productsite import gunicorn_errors

    assert gunicorn_errors.install() is False and util.write_error is write_error  # left as it is


def test_a_body_left_unread_closes_its_connection_and_the_clients_next_request_works(sqlite_gunicorn):
    # gunicorn reads at most 64 KiB of a body the service left unread (a 413
    # reads none of it) before the next request on the connection; past that
    # it closed the connection after answering "keep-alive", and a pooled
    # client's next request failed ("Server disconnected": 7 of 10 in a review).
    server = sqlite_gunicorn(workers=1, threads=4)  # gthread: keep-alive
    with requests.Session() as client:
        assert client.get(server.url + "/health/", timeout=5).headers["Connection"] == "keep-alive"
        for size in (1_100_000, 5_000_000, 100_000):
            refused = client.post(
                server.url + "/api/products/",
                data=b'{"name": "' + b"x" * size + b'"}',
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
            assert refused.status_code in (413, 401), size  # over the limit, or anonymous
            assert refused.headers["Connection"] == "close", size
            after = client.get(server.url + "/health/", timeout=5)  # on a new connection
            assert after.status_code == 200, size
            assert after.headers["Connection"] == "keep-alive"
