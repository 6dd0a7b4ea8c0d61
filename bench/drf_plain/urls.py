from django.urls import include, path
from rest_framework import serializers, viewsets
from rest_framework.routers import DefaultRouter

from products.models import Product


class PlainProductSerializer(serializers.ModelSerializer):
    class Meta:
        model = Product
        fields = ["id", "name", "price", "quantity", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]


class PlainProductViewSet(viewsets.ModelViewSet):
    queryset = Product.objects.all()
    serializer_class = PlainProductSerializer
    lookup_field = "name"
    lookup_value_regex = "[^/]+"


router = DefaultRouter()
router.include_format_suffixes = False
router.register("products", PlainProductViewSet, basename="product")

urlpatterns = [path("api/", include(router.urls))]
