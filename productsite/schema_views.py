"""drf-spectacular's schema and docs views, with their errors as JSON in DRF's shape.

Every error under ``/api/`` is JSON (docs/production.md). drf-spectacular's
views render theirs with what they serve: an unknown ``?format=`` (404), a
wrong method (405) or an ``Accept`` they cannot meet (406) came back as
YAML, or as an HTML "406" for a ``POST`` to the docs pages, and an
``OPTIONS`` to Swagger UI's page was a 500 (its template has no metadata page). Imported on the
first request for them (productsite.urls), as drf-spectacular's views are.
"""

from __future__ import annotations

from drf_spectacular import views
from rest_framework.renderers import JSONRenderer


class JSONErrors:
    """Render a view's errors with DRF's JSONRenderer, whatever the view renders otherwise."""

    def perform_content_negotiation(self, request, force=False):
        method = request.method.lower()
        if method == "options" or not hasattr(self, method) or method not in self.http_method_names:
            # The 405 to come: negotiated against HTML or YAML only, a JSON
            # client's POST would get a 406 instead. OPTIONS answers DRF's
            # metadata, which the docs pages' template cannot render.
            renderer = JSONRenderer()
            return renderer, renderer.media_type
        return super().perform_content_negotiation(request, force)

    def finalize_response(self, request, response, *args, **kwargs):
        if getattr(response, "exception", False):
            renderer = JSONRenderer()
            request.accepted_renderer, request.accepted_media_type = renderer, renderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


class SchemaView(JSONErrors, views.SpectacularAPIView):
    pass


class SwaggerView(JSONErrors, views.SpectacularSwaggerView):
    pass


class RedocView(JSONErrors, views.SpectacularRedocView):
    pass
