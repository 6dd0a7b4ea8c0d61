from django.contrib import admin

from .models import Product


class InStockFilter(admin.SimpleListFilter):
    title = "in stock"
    parameter_name = "in_stock"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(quantity__gt=0)
        if self.value() == "no":
            return queryset.filter(quantity=0)
        return queryset


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "price", "quantity", "updated_at"]
    search_fields = ["name"]
    list_filter = [InStockFilter]
    ordering = ["name"]
    readonly_fields = ["created_at", "updated_at"]
    fields = ["name", "price", "quantity", "created_at", "updated_at"]
