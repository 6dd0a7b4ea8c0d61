"""Thin views: the products viewset and the original service's routes.

Their OpenAPI declarations live in products/schema.py and are applied when a
schema is generated (productsite.schema_generator), so serving requests
never imports drf-spectacular's generator.
"""

from __future__ import annotations

from django.db import transaction
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import cache
from .conditional import etag_matches
from .dberrors import WRITE_LOCK_LOST
from .exceptions import InsufficientStockConflict, PreconditionFailed, StockOutOfRangeConflict
from .filters import ProductFilter
from .models import Product
from .permissions import ProductPermissions
from .responses import cached_product_response, etag_of, plain_json_response, product_location
from .selectors import legacy_shape, product_json, representations
from .serializers import (
    LegacyProductSerializer,
    ProductSerializer,
    StockChangeSerializer,
)
from .services import stock
from .validators import NAME_URL_PATTERN


class ProductViewSet(viewsets.ModelViewSet):
    """Products, looked up by name. Reads are cached; writes honour If-Match."""

    queryset = Product.objects.all()
    serializer_class = ProductSerializer
    permission_classes = [ProductPermissions]
    lookup_field = "name"
    # No control characters: such a name cannot exist, and some databases
    # refuse NUL in a query (a 404 from the router instead of a 500).
    lookup_value_regex = NAME_URL_PATTERN
    filterset_class = ProductFilter
    ordering_fields = ["name", "price", "quantity", "created_at", "updated_at"]
    ordering = ["name"]
    # None until productsite.schema_generator declares it: the router reads
    # every attribute, and the default would load drf-spectacular's generator.
    schema = None

    def filter_queryset(self, queryset):
        # The filters and the ordering are the list's. A product's page reads
        # the same with any query string: its JSON comes from the cache, which
        # never sees them, and the browsable HTML must agree (?search=zzz was a 404).
        if self.action != "list":
            return queryset
        return super().filter_queryset(queryset)

    def list(self, request: Request, *args, **kwargs):
        # Rows straight into the representation the serializer would build:
        # no model instance per row, the largest part of a page's cost.
        queryset = representations(self.filter_queryset(self.get_queryset()))
        page = self.paginate_queryset(queryset)
        if page is None:
            return Response(list(queryset))
        return plain_json_response(request, self.paginator.get_paginated_data(page))

    def retrieve(self, request: Request, *args, **kwargs):
        cached = cache.get_product(kwargs["name"], product_json)
        if cached is None:
            raise NotFound()
        return cached_product_response(
            request, cached, html_data=lambda: self.get_serializer(self.get_object()).data
        )

    def create(self, request: Request, *args, **kwargs):
        lost = request.META.pop(WRITE_LOCK_LOST, None)
        if lost is not None:
            # productsite.fastcreate's INSERT waited out another writer's lock
            # and handed the request over: answer that, not after a second wait.
            raise lost
        response = super().create(request, *args, **kwargs)
        response["Location"] = product_location(request, "product-detail", response.data["name"])
        response["ETag"] = etag_of(response.data)
        return response

    def _locked_object(self) -> Product:
        """Load the product for a write, locked until the transaction ends."""
        name = self.kwargs["name"]
        try:
            product = Product.objects.select_for_update().get(name=name)
        except Product.DoesNotExist:
            raise NotFound() from None
        self.check_object_permissions(self.request, product)
        if_match = self.request.headers.get("If-Match")
        if_none_match = self.request.headers.get("If-None-Match")
        if if_match is not None or if_none_match:
            # Check and write in one transaction, under the row lock, so two
            # editors cannot both pass the check.
            current = etag_of(ProductSerializer(product).data)
            # An empty If-Match names no tag: nothing matches (412), as "," does.
            if if_match is not None and not etag_matches(if_match, current, weak=False):
                raise PreconditionFailed()
            # RFC 9110 13.1.2: on a write, a matching If-None-Match ("*": any
            # current product) is a failed precondition, not a 304.
            if if_none_match and etag_matches(if_none_match, current):
                raise PreconditionFailed(
                    "The product matches If-None-Match (its current ETag, or *); nothing was changed."
                )
        return product

    def update(self, request: Request, *args, **kwargs):
        partial = kwargs.pop("partial", False)
        with transaction.atomic():
            product = self._locked_object()
            serializer = self.get_serializer(product, data=request.data, partial=partial)
            serializer.is_valid(raise_exception=True)
            serializer.save()
        response = Response(serializer.data)
        response["ETag"] = etag_of(serializer.data)
        return response

    def destroy(self, request: Request, *args, **kwargs):
        with transaction.atomic():
            self._locked_object().delete()
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=True, methods=["post"], serializer_class=StockChangeSerializer)
    def stock(self, request: Request, name: str | None = None):
        """Add delta to the quantity atomically; 409 if it would go negative; honours If-Match."""
        serializer = StockChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            with transaction.atomic():
                if "If-Match" in request.headers or request.headers.get("If-None-Match"):
                    # Checked under the row lock the change then takes, as for an update.
                    self._locked_object()
                product = stock.adjust_stock(name=name, delta=serializer.validated_data["delta"])
        except Product.DoesNotExist:
            raise NotFound() from None
        except stock.InsufficientStock:
            raise InsufficientStockConflict() from None
        except stock.StockOverflow:
            # Like going below zero: a conflict with the stored quantity, not bad input.
            raise StockOutOfRangeConflict() from None
        data = ProductSerializer(product).data
        response = Response(data)
        response["ETag"] = etag_of(data)
        return response


class LegacyProductListView(APIView):
    """POST /products: the original service's create route."""

    queryset = Product.objects.all()
    serializer_class = (
        LegacyProductSerializer  # the browsable API's form and the schema; post() validates as the API
    )
    permission_classes = [ProductPermissions]

    def post(self, request: Request):
        serializer = ProductSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        product = serializer.save()
        response = Response(legacy_shape(serializer.data), status=status.HTTP_201_CREATED)
        response["Location"] = product_location(request, "legacy-product-detail", product.name)
        response["ETag"] = etag_of(serializer.data)  # the product's, as its reads on either route send
        return response


class LegacyProductDetailView(APIView):
    """GET /products/{name}: the original service's read route, same cache."""

    queryset = Product.objects.all()
    serializer_class = LegacyProductSerializer
    permission_classes = [ProductPermissions]

    def get(self, request: Request, name: str):
        cached = cache.get_product(name, product_json)
        if cached is None:
            raise NotFound()
        return cached_product_response(request, cached, shape=legacy_shape)
