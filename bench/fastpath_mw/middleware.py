"""The fast path's answer given from inside Django's middleware stack (bench only)."""

from __future__ import annotations

from django.http import HttpResponse

from productsite import fastpath
from productsite.fastpath import FastProductReads


class CachedProductMiddleware:
    """Answer anonymous JSON product reads from the cache; the rest goes on to the view."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.reads = FastProductReads(None)
        # The WSGI layer's settings, without its check that MIDDLEWARE is the
        # stack it mirrors: here it is not, on purpose (this middleware is in it).
        self.setup = fastpath._Setup()
        self.setup.read_settings()

    def __call__(self, request):
        environ = request.META
        match = self.reads.match(environ, self.setup)
        if match is not None:
            answer = self.reads.answer(environ, *match, self.setup)
            if answer is not None:
                status, headers, body, _x_cache = answer
                # The middleware above this one add Vary, the security headers
                # and Content-Length themselves.
                response = HttpResponse(body, status=int(status[:3]), content_type="application/json")
                for name, value in headers:
                    if name in ("ETag", "X-Cache", "Allow"):
                        response[name] = value
                response["Vary"] = "Accept"
                return response
        return self.get_response(request)
