"""The API's front door: a root that says what the service is and links everything."""

from __future__ import annotations

from django.urls import NoReverseMatch
from rest_framework import routers
from rest_framework.response import Response
from rest_framework.reverse import reverse

# (key, URL name, what a newcomer finds there). Names, not paths: the URLconf
# stays the one place that spells the paths.
_LINKS = (
    ("docs", "swagger-ui", "interactive API documentation (Swagger UI, try requests out)"),
    ("redoc", "redoc", "the same documentation as one readable page (ReDoc)"),
    ("schema", "schema", "the OpenAPI 3 schema (YAML; ?format=json for JSON)"),
    ("admin", "admin:index", "the admin site, for staff: edit, export and import products"),
    ("health", "health", "database and cache reachability (503 when the database is down)"),
)


class ServiceRootView(routers.APIRootView):
    """A catalogue of products with cached reads, conditional requests and atomic stock changes.

    Read anonymously; write with a token (the header Authorization: Token <key>;
    manage.py create_editor makes one) or a session. Start at products, or read the docs.
    """

    # Plain text: the browsable API shows this as written (Markdown is not installed).

    def get_view_name(self) -> str:
        return "Product catalogue API"

    def get(self, request, *args, **kwargs):
        endpoints = super().get(request, *args, **kwargs).data
        links = {}
        for key, url_name, description in _LINKS:
            try:
                links[key] = {"url": reverse(url_name, request=request), "description": description}
            except NoReverseMatch:  # a deployment without the admin, say
                continue
        return Response(
            {
                "service": self.get_view_name(),
                "description": " ".join(self.__doc__.split()),
                "endpoints": endpoints,
                "links": links,
            }
        )


class ServiceRouter(routers.DefaultRouter):
    """DefaultRouter whose root describes the service and links its docs."""

    APIRootView = ServiceRootView
