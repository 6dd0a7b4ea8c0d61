"""The ceiling: a bare WSGI callable answering one fixed product JSON.

Nothing any framework could do is faster on the same gunicorn settings.
"""

BODY = (
    b'{"id":1,"name":"product-00001","price":"19.99","quantity":5,'
    b'"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}'
)
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
