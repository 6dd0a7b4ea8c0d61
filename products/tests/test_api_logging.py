"""One structured (key=value) log line per request; the level comes from LOG_LEVEL."""

from __future__ import annotations

import logging
import re

import pytest

from products.logfields import format_fields

from .support.processes import manage, server_env

pytestmark = pytest.mark.django_db

LINE = re.compile(
    r'^method=(?P<method>\S+) path=(?P<path>"(?:[^"\\]|\\.)*"|\S+) status=(?P<status>\d{3}) '
    r"duration_ms=(?P<duration>\d+\.\d) cache=(?P<cache>HIT|MISS|-) request_id=(?P<request_id>[0-9a-f]{32})$"
)


def _request_lines(caplog) -> list[re.Match]:
    lines = [r.getMessage() for r in caplog.records if r.name == "products.requests"]
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    return matches


def test_each_request_logs_one_key_value_line_with_cache_status(anon_client, make_product, caplog):
    make_product("Lamp")
    with caplog.at_level(logging.INFO, logger="products.requests"):
        anon_client.get("/api/products/Lamp/")
        anon_client.get("/api/products/Lamp/")
        anon_client.get("/api/products/nothing/")
    first, second, missing = _request_lines(caplog)
    assert (first["method"], first["path"], first["status"], first["cache"]) == (
        "GET",
        "/api/products/Lamp/",
        "200",
        "MISS",
    )
    assert second["cache"] == "HIT"
    assert (missing["status"], missing["cache"]) == ("404", "-")
    assert float(first["duration"]) >= 0


def test_paths_with_spaces_and_quotes_stay_one_parseable_field():
    assert (
        format_fields({"path": '/api/products/a "b"/', "status": 200})
        == 'path="/api/products/a \\"b\\"/" status=200'
    )


def test_a_value_ending_in_a_newline_is_quoted_and_escaped():
    # "$" in the bare-value pattern matched before a final "\n": a path
    # ending in %0A went out bare and split the request's line in two.
    assert (
        format_fields({"path": "/api/products/x\n", "status": 404}) == 'path="/api/products/x\\n" status=404'
    )
    from products.logfields import request_id

    assert request_id("abc\n") != "abc\n"  # replaced, not kept


def test_fields_are_on_the_record_for_a_json_formatter(anon_client, caplog):
    with caplog.at_level(logging.INFO, logger="products.requests"):
        anon_client.get("/health/")
    record = next(r for r in caplog.records if r.name == "products.requests")
    assert record.request_fields["status"] == 200 and record.request_fields["path"] == "/health/"


def test_log_level_comes_from_the_environment():
    code = "import logging; print(logging.getLevelName(logging.getLogger('products.requests').getEffectiveLevel()))"
    assert manage(server_env(LOG_LEVEL="warning"), "shell", "-c", code).stdout.split()[-1] == "WARNING"
    assert manage(server_env(LOG_LEVEL="DEBUG"), "shell", "-c", code).stdout.split()[-1] == "DEBUG"


def test_django_request_logs_only_what_the_request_line_cannot_say():
    """A 5xx the API answered on purpose is in the request's line; a traceback is not."""
    import sys

    logger = logging.getLogger("django.request")
    answered = logger.makeRecord(
        "django.request", logging.ERROR, __file__, 1, "Service Unavailable: %s", ("/api/",), None
    )
    assert not logger.filter(answered)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        crashed = logger.makeRecord(
            "django.request",
            logging.ERROR,
            __file__,
            1,
            "Internal Server Error: %s",
            ("/api/",),
            sys.exc_info(),
        )
    assert logger.filter(crashed)


@pytest.mark.django_db
def test_a_traceback_names_the_request_it_belongs_to(monkeypatch):
    """With several threads per worker, timing alone cannot tie a 500's traceback to its request line."""
    import io

    from django.test import Client

    from products.views import ProductViewSet

    def crash(self, request, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(ProductViewSet, "list", crash)
    (console,) = [h for h in logging.getLogger().handlers if h.get_name() == "console"]
    stream = io.StringIO()
    previous = console.setStream(stream)
    try:
        response = Client(raise_request_exception=False).get("/api/products/", HTTP_X_REQUEST_ID="crash-1")
        Client().get("/api/", HTTP_X_REQUEST_ID="calm-2")  # logs its own line only
    finally:
        console.setStream(previous)
    assert response.status_code == 500
    output = stream.getvalue()
    assert "Internal Server Error: /api/products/ request_id=crash-1\nTraceback" in output, output
    assert "RuntimeError: boom" in output
    assert output.count("request_id=crash-1") == 2  # the traceback and the request's line
    assert output.count("request_id=calm-2") == 1


def test_a_malformed_log_call_during_a_request_is_left_to_the_handler():
    """The request id filter must not turn a library's bad log call into an exception (a 500).

    Filters run outside a handler's error handling; emit() reports a bad call
    as "--- Logging error ---" and carries on.
    """
    from products.logfields import current_request_id

    (console,) = [h for h in logging.getLogger().handlers if h.get_name() == "console"]
    record = logging.getLogger("products.somewhere").makeRecord(
        "products.somewhere", logging.WARNING, __file__, 1, "%s %s", ("one argument",), None
    )
    serving = current_request_id.set("req-9")
    try:
        assert console.filter(record)  # no exception
    finally:
        current_request_id.reset(serving)
    assert (record.msg, record.args) == ("%s %s", ("one argument",))  # left for emit() to report
