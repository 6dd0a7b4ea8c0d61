import django_filters

from .models import Product


class ProductFilter(django_filters.FilterSet):
    search = django_filters.CharFilter(
        field_name="name", lookup_expr="icontains", help_text="Name contains (case-insensitive)."
    )
    min_price = django_filters.NumberFilter(
        field_name="price", lookup_expr="gte", help_text="Price at least this (inclusive)."
    )
    max_price = django_filters.NumberFilter(
        field_name="price", lookup_expr="lte", help_text="Price at most this (inclusive)."
    )
    in_stock = django_filters.BooleanFilter(
        method="filter_in_stock", help_text="true: quantity > 0; false: quantity = 0."
    )

    class Meta:
        model = Product
        fields = ["search", "min_price", "max_price", "in_stock"]

    def filter_in_stock(self, queryset, name, value):
        return queryset.filter(quantity__gt=0) if value else queryset.filter(quantity=0)
