"""The API's OPTIONS answer: DRF's, with the fields that describe themselves typed as they say.

DRF's ``SimpleMetadata`` names a field's type by its class; ``PriceField`` and
``QuantityField`` (products.serializers) are plain ``Field`` subclasses, so
OPTIONS called both ``"field"``, with no limits. A field with an ``options``
dict (its type and limits) is described by it instead. Nothing is imported
from the serializers here: DRF reads this class while defining ``APIView``.
"""

from __future__ import annotations

from rest_framework.metadata import SimpleMetadata


class ProductMetadata(SimpleMetadata):
    def get_field_info(self, field) -> dict:
        info = super().get_field_info(field)
        info.update(getattr(field, "options", None) or {})
        return info
