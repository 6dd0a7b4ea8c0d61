"""Call the WSGI stack productsite/wsgi.py builds, and what it answered (the fast-path parity tests)."""

import json
from collections.abc import Callable
from urllib.parse import unquote_to_bytes, urlsplit

from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections


class Answer:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes, django: bool) -> None:
        self.status_code = int(status[:3])
        self.headers = dict(headers)
        self.header_list = headers
        self.body = body
        self.handled_by_django = django  # Django's handler ran (not the fast path)

    def json(self):
        return json.loads(self.body)


def server_environ(request, url: str) -> dict:
    """Return the environ of a RequestFactory request for ``url``, its ``PATH_INFO`` as a WSGI server gives it.

    Building the WSGIRequest replaced it with Django's decoded (and, for bytes
    that are not UTF-8, re-percent-encoded) path; a server passes the path's
    bytes as latin-1 (PEP 3333).
    """
    environ = request.environ
    environ["PATH_INFO"] = unquote_to_bytes(urlsplit(url).path).decode("iso-8859-1")
    return environ


def call(wrap: Callable[[WSGIHandler], Callable], environ: dict) -> Answer:
    """Answer ``environ`` with ``wrap(WSGIHandler())``, built now as a server builds it at start.

    Like Django's test client, the request signals do not close the test's
    database connection; ``request_started`` tells whether Django's handler ran.
    """
    started: list[object] = []

    def note_start(sender, **kwargs):
        started.append(sender)

    seen: list = []
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    request_started.connect(note_start)
    try:
        application = wrap(WSGIHandler())
        result = application(environ, lambda status, hdrs, exc=None: seen.append((status, hdrs)))
        body = b"".join(result)
        getattr(result, "close", lambda: None)()
    finally:
        request_started.disconnect(note_start)
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    django = any(sender is WSGIHandler for sender in started)
    return Answer(seen[-1][0], seen[-1][1], body, django)
