from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.options import IncorrectLookupParameters
from django.db import DatabaseError, router, transaction
from django.http import StreamingHttpResponse
from django.urls import path
from django.utils import timezone

from .admin_import import import_view
from .forms import ProductForm
from .models import Product
from .services.exporting import product_export_chunks


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
    form = ProductForm  # the rules' own messages, as in the API and the import
    list_display = ["name", "price", "quantity", "updated_at"]
    search_fields = ["name"]
    list_filter = [InStockFilter]
    ordering = ["name"]
    readonly_fields = ["created_at", "updated_at"]
    fields = ["name", "price", "quantity", "created_at", "updated_at", "seen_version"]
    actions = ["export_selected_as_csv", "mark_out_of_stock"]
    # Adds the "Import" button (for users who may add and change products).
    change_list_template = "admin/products/product/change_list.html"

    def get_urls(self):
        opts = self.model._meta
        name = f"{opts.app_label}_{opts.model_name}_import"
        view = self.admin_site.admin_view(lambda request: import_view(self, request))
        return [path("import/", view, name=name), *super().get_urls()]

    def get_changelist_instance(self, request):
        # The changelist takes any lookup on a field from the query string
        # (?name__regex=, ?created_at__year=). One the database refuses (a
        # malformed regex) or that cannot become a query (year 999999999) is
        # bad input: Django's own answer for bad lookups (a redirect to ?e=1), not a 500.
        try:
            # A savepoint: inside a transaction (a test, ATOMIC_REQUESTS),
            # PostgreSQL refuses every later query after a failed one.
            with transaction.atomic(using=router.db_for_read(self.model)):
                return super().get_changelist_instance(request)
        except (DatabaseError, ValueError, OverflowError) as exc:
            raise IncorrectLookupParameters(exc) from exc

    def changelist_view(self, request, extra_context=None):
        can_import = self.has_add_permission(request) and self.has_change_permission(request)
        return super().changelist_view(request, {**(extra_context or {}), "can_import": can_import})

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_selected_as_csv(self, request, queryset):
        # Streamed, in the import format. Made for spreadsheets: a name that
        # would run as a formula (=HYPERLINK(...)) gets a leading quote, so
        # such names do not import back unchanged (export_products does).
        chunks = (
            text for text, _ in product_export_chunks(fmt="csv", queryset=queryset, spreadsheet_safe=True)
        )
        response = StreamingHttpResponse(chunks, content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="products-{stamp}.csv"'
        return response

    @admin.action(description="Mark out of stock", permissions=["change"])
    def mark_out_of_stock(self, request, queryset):
        # ProductQuerySet.update() invalidates the cached products after commit.
        changed = list(queryset.exclude(quantity=0).values_list("pk", flat=True))
        count = queryset.update(quantity=0)
        if changed:  # the admin's history, as a save in the change form writes it
            LogEntry.objects.log_actions(
                user_id=request.user.pk,
                queryset=Product.objects.filter(pk__in=changed),
                action_flag=CHANGE,
                change_message=[{"changed": {"fields": ["Quantity"]}}],
            )
        self.message_user(request, f"Marked {count} product(s) out of stock.", messages.SUCCESS)
