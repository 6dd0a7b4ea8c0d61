"""One escaped log line per request, carrying a request id (app, fast path, gunicorn)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from products.logfields import escape, format_fields, request_id

from .support.gunicorn import Gunicorn
from .support.processes import free_port, manage, server_env
from .support.processes import migrate as migrate_database

pytestmark = pytest.mark.django_db


def test_a_sane_client_request_id_is_kept_and_returned(anon_client, caplog):
    with caplog.at_level(logging.INFO, logger="products.requests"):
        response = anon_client.get("/health/", HTTP_X_REQUEST_ID="trace-42.a:b")
    assert response["X-Request-ID"] == "trace-42.a:b"
    (record,) = [r for r in caplog.records if r.name == "products.requests"]
    assert record.getMessage().endswith(" request_id=trace-42.a:b")
    assert record.request_fields["request_id"] == "trace-42.a:b"


@pytest.mark.parametrize("header", ["", "x" * 129, "two words", "line\nbreak", "ünïcode", 'a"b', "a=b;c"])
def test_a_missing_or_odd_request_id_is_replaced_by_a_fresh_one(anon_client, header):
    extra = {"HTTP_X_REQUEST_ID": header} if header else {}
    first = anon_client.get("/api/products/", **extra)["X-Request-ID"]
    second = anon_client.get("/api/products/", **extra)["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


def test_every_answer_carries_a_request_id_errors_included(anon_client):
    for path in ("/api/products/nothing/", "/no/such/page", "/api/products/?ordering=bogus"):
        assert re.fullmatch(r"[0-9a-f]{32}", anon_client.get(path)["X-Request-ID"]), path


def test_control_and_non_printable_characters_are_escaped():
    forged = "/x\nmethod=GET path=/admin/ status=200\r\x1b[2J\x00\x7f\x85\u2028\u202e\\"
    line = format_fields({"path": forged, "status": 404})
    assert line == (
        'path="/x\\nmethod=GET path=/admin/ status=200\\r\\x1b[2J\\x00\\x7f\\x85\\u2028\\u202e\\\\" status=404'
    )
    assert line.isprintable()
    assert escape("plain ü ☕") == "plain ü ☕"
    assert request_id("ok-1") == "ok-1"


def test_a_4xx_logs_one_line_and_no_django_request_warning(anon_client, caplog):
    with caplog.at_level(logging.INFO):
        anon_client.get("/api/products/nothing/")
        anon_client.post("/api/products/", {"name": "x"})
    assert [r.name for r in caplog.records] == ["products.requests", "products.requests"]


# --- A real gunicorn, reading what it writes --------------------------------------


class LoggingGunicorn(Gunicorn):
    """gunicorn (the project's gunicorn.conf.py, 2 workers) with its output in a file."""

    def __init__(self, tmp_path: Path, migrate: bool = True, **env: str) -> None:
        self.log = tmp_path / "server.log"
        environment = server_env(
            **{"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "LOG_LEVEL": "INFO", **env}
        )
        if migrate:
            migrate_database(environment)
        super().__init__(environment, threads=None, quiet=False, output=self.log, ready="/health/live/")
        self.start()

    def lines(self) -> list[str]:
        """Return what gunicorn wrote once the file has not grown for 0.3 s (at most 5 s).

        gunicorn's access line is written after the response has gone out.
        """
        deadline = time.monotonic() + 5
        size = self.log.stat().st_size
        while True:
            time.sleep(0.3)
            grown = self.log.stat().st_size
            if grown == size or time.monotonic() > deadline:
                return self.log.read_text().splitlines()
            size = grown


@pytest.fixture
def logging_gunicorn(tmp_path) -> Iterator[callable]:
    started: list[LoggingGunicorn] = []

    def start(migrate: bool = True, **env: str) -> LoggingGunicorn:
        server = LoggingGunicorn(tmp_path, migrate, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


FORGED = "/api/products/x%0a2026-01-01 00:00:00,000 INFO products.requests method=GET path=/admin/ status=200"


def _request_lines(lines: list[str]) -> list[str]:
    # Less the start-up probes.
    return [line for line in lines if "products.requests" in line and "path=/health/live/" not in line]


@pytest.mark.slow
def test_gunicorn_writes_one_escaped_line_per_request_by_default(logging_gunicorn):
    server = logging_gunicorn()
    requests.post(server.url + "/api/products/", json={}, timeout=5)  # 401: anonymous write
    forged = requests.get(server.url + FORGED, timeout=5)
    fast = requests.get(server.url + "/api/products/nothing/", headers={"X-Request-ID": "abc-123"}, timeout=5)
    assert forged.status_code == 404 and fast.status_code == 404
    assert fast.headers["X-Request-ID"] == "abc-123"  # answered by the fast path
    lines = server.lines()
    request_lines = _request_lines(lines)
    assert len(request_lines) == 3, lines  # no access-log line, no django.request warning
    assert not any("WARNING" in line and "django.request" in line for line in lines)
    assert not any(line.startswith("remote=") for line in lines)  # the access log's format
    assert "status=401" in request_lines[0]
    assert "\\n2026-01-01 00:00:00,000 INFO products.requests" in request_lines[1]
    assert f"request_id={forged.headers['X-Request-ID']}" in request_lines[1]
    assert "request_id=abc-123" in request_lines[2]
    assert not any(line.startswith("2026-01-01") for line in lines)  # nothing forged


@pytest.mark.slow
def test_gunicorn_access_log_when_asked_for_is_escaped_too(logging_gunicorn):
    server = logging_gunicorn(GUNICORN_ACCESS_LOG="-", LOG_LEVEL="WARNING")
    response = requests.get(server.url + FORGED, timeout=5)
    lines = server.lines()
    access = [line for line in lines if line.startswith("remote=") and "/health/live/" not in line]
    assert len(access) == 1, lines
    assert 'path="/api/products/x\\n2026-01-01 00:00:00,000 INFO' in access[0]
    assert f"request_id={response.headers['X-Request-ID']}" in access[0]
    assert not any(line.startswith("2026-01-01") for line in lines)


@pytest.mark.slow
def test_a_head_request_logs_one_line_and_no_dropped_body_warning(logging_gunicorn):
    # gunicorn warns once per response when the app sends body bytes for a
    # HEAD: a second line for every load-balancer or monitoring probe.
    server = logging_gunicorn()
    for path in ["/health/", "/api/", "/api/products/", "/products/nothing"]:
        response = requests.head(server.url + path, timeout=5)
        assert response.content == b""
        assert response.headers["X-Request-ID"]
    get = requests.get(server.url + "/api/", timeout=5)
    assert requests.head(server.url + "/api/", timeout=5).headers["Content-Length"] == str(len(get.content))
    lines = server.lines()
    assert len(_request_lines(lines)) == 6, lines
    assert not any("no-body response" in line for line in lines), lines


@pytest.mark.slow
def test_a_bad_host_header_logs_one_line_and_no_traceback(logging_gunicorn):
    # Anyone can send a wrong Host; Django's DisallowedHost ERROR with a
    # traceback would let them fill the log at will.
    server = logging_gunicorn()
    response = requests.get(server.url + "/api/", headers={"Host": "evil.example"}, timeout=5)
    assert response.status_code == 400
    lines = server.lines()
    assert len(_request_lines(lines)) == 1, lines
    assert "status=400" in _request_lines(lines)[0]
    assert "reason=\"DisallowedHost: Invalid HTTP_HOST header: 'evil.example'." in _request_lines(lines)[0]
    assert not any("Traceback" in line for line in lines), lines
    assert [line for line in lines if "DisallowedHost" in line] == _request_lines(lines)


@pytest.mark.slow
def test_requests_django_finds_suspicious_log_one_line_each_with_the_reason(logging_gunicorn):
    # Too many fields, too many files, a CSRF failure: Django logs each on a
    # line of its own (ERROR and a 50-line traceback for the first two),
    # which any anonymous client could repeat at will.
    server = logging_gunicorn()
    token = manage(server.env, "create_editor", "editor").stdout.strip()
    many_fields = requests.get(server.url + "/api/products/?" + "a=1&" * 1001, timeout=5)
    many_files = requests.post(
        server.url + "/api/products/",
        files=[(f"f{i}", (f"f{i}.txt", b"x")) for i in range(101)],
        headers={"Authorization": f"Token {token}"},
        timeout=5,
    )
    no_csrf = requests.post(server.url + "/admin/login/", data={"username": "a", "password": "b"}, timeout=5)
    assert many_fields.status_code == 400
    assert many_fields.json() == {
        "detail": "Too many parameters: at most 1000 query string and form fields are accepted."
    }
    assert many_files.status_code == 400
    assert many_files.json() == {"detail": "Too many files: at most 100 are accepted."}
    assert no_csrf.status_code == 403
    lines = server.lines()
    request_lines = _request_lines(lines)
    assert len(request_lines) == 3, lines
    assert 'reason="TooManyFieldsSent: The number of GET/POST parameters exceeded' in request_lines[0]
    assert 'reason="TooManyFilesSent: The number of files exceeded' in request_lines[1]
    assert 'reason="csrf: Forbidden (CSRF cookie not set.): /admin/login/"' in request_lines[2]
    assert not any("Traceback" in line or "django.security" in line for line in lines), lines


@pytest.mark.slow
def test_a_read_while_the_database_is_down_logs_its_line_and_one_warning_not_a_traceback(logging_gunicorn):
    # The fast path handed such a read to Django with a 60-line traceback
    # each time (~88 lines per request during an outage).
    server = logging_gunicorn(migrate=False, DATABASE_URL=f"postgres://nobody@127.0.0.1:{free_port()}/none")
    for number in range(3):
        response = requests.get(
            server.url + "/api/products/Mug/", headers={"X-Request-ID": f"outage-{number}"}, timeout=10
        )
        assert response.status_code == 503
        assert response.json()["detail"] == "The database is unavailable; try again shortly."
    # A token create too: the fast create's token lookup logged an ERROR and a traceback.
    create = requests.post(
        server.url + "/api/products/",
        json={"name": "Mug", "price": "1.00"},
        headers={"Authorization": "Token " + "a" * 40},
        timeout=10,
    )
    assert create.status_code == 503, create.text
    lines = server.lines()
    assert len(_request_lines(lines)) == 4, lines
    assert sum("Database unavailable, answered 503" in line for line in lines) == 4, lines
    # Each warning names its request, as its request line does.
    for number in range(3):
        assert any(
            "Database unavailable, answered 503" in line and line.endswith(f" request_id=outage-{number}")
            for line in lines
        ), lines
    # psycopg's message has a second line ("Is the server running ...?"): the record keeps the first.
    assert not any("Is the server running" in line for line in lines), lines
    assert not any("Traceback" in line or "Fast product read failed" in line for line in lines), lines
    assert not any("Fast create failed" in line for line in lines), lines
