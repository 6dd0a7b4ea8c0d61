"""drf-spectacular's generator, with the views' OpenAPI declarations applied first.

The declarations (products/schema.py) are applied when the first schema is
generated rather than as decorators in products/views.py: decorating imports
drf-spectacular's generator (and through it django.test, jinja2, PyYAML...),
several MiB in every server process that never serves a schema. It lives in
the deployment layer because it ties the views to their declarations.
"""

from __future__ import annotations

from drf_spectacular.generators import SchemaGenerator

from products import monitoring, schema, views

_annotated = False


def annotate_views() -> None:
    """Apply products.schema's declarations to the views, once."""
    global _annotated
    if not _annotated:
        del views.ProductViewSet.schema  # None in views.py; back to the default
        schema.product_viewset_schema(views.ProductViewSet)
        schema.legacy_create_schema(views.LegacyProductListView.post)
        schema.legacy_retrieve_schema(views.LegacyProductDetailView.get)
        schema.health_schema(monitoring.HealthView.get)
        _annotated = True


class ProductSchemaGenerator(SchemaGenerator):
    """drf-spectacular's generator, with the views' declarations applied first."""

    def __init__(self, *args, **kwargs) -> None:
        annotate_views()
        super().__init__(*args, **kwargs)
