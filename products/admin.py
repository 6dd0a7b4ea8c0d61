from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.models import CHANGE
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, connections, models, router, transaction
from django.db.models.constants import LOOKUP_SEP
from django.http import StreamingHttpResponse
from django.urls import path
from django.utils import timezone
from django.utils.text import smart_split, unescape_string_literal

from .admin_history import HISTORY_LIMIT, log_history
from .admin_import import import_view
from .dberrors import duplicate_key
from .filters import CaseFold
from .forms import ProductForm
from .models import Product
from .services.exporting import product_export_chunks
from .validators import fold_case


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


class RefusedLookupsAreBadLookups:
    """A ModelAdmin mixin: a query-string lookup the database refuses is Django's bad-lookup redirect.

    The changelist takes any lookup on a field from the query string
    (?name__regex=, ?created_at__year=). One the database refuses (a
    malformed regex) or that cannot become a query (year 999999999) is bad
    input: Django's own answer for bad lookups (a redirect to ?e=1), not a 500.
    So is any regular expression (``__regex``, ``__iregex``): on SQLite
    Python's ``re`` runs it against every row, and a pattern such as
    ``(a*)*$`` kept a worker busy until gunicorn killed it. An action posted
    with a selection that is not ids is refused with a message, not a 500.
    """

    def get_changelist_instance(self, request):
        for key in request.GET:
            if key.rsplit(LOOKUP_SEP, 1)[-1] in ("regex", "iregex"):
                raise IncorrectLookupParameters(f"{key}: no regular expression from the query string")
        try:
            # A savepoint: inside a transaction (a test, ATOMIC_REQUESTS),
            # PostgreSQL refuses every later query after a failed one.
            with transaction.atomic(using=router.db_for_read(self.model)):
                return super().get_changelist_instance(request)
        except (DatabaseError, ValueError, OverflowError) as exc:
            raise IncorrectLookupParameters(exc) from exc

    def get_object(self, request, object_id, from_field=None):
        # The change, history and delete pages: "1_0" reached product 10 through int().
        field = self.model._meta.pk if from_field is None else self.model._meta.get_field(from_field)
        if _not_an_id(field, object_id):
            return None  # Django's "does not exist" answer
        return super().get_object(request, object_id, from_field)

    def response_action(self, request, queryset):
        # Django filters by the posted ids as they come: "x" was a 500.
        pk = self.model._meta.pk
        try:
            for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                if _not_an_id(pk, value):
                    raise ValidationError("not an id")
                pk.run_validators(pk.to_python(value))  # the range too: SQLite overflows past 64 bits
        except ValidationError:
            self.message_user(
                request,
                "The selection is not a list of items of this page; nothing was changed.",
                messages.ERROR,
            )
            return None  # the list again, with the message
        return super().response_action(request, queryset)


# Objects listed by name on the confirmation page of a bulk delete; the rest are counted.
DELETE_LISTED = 100


def delete_selected_across(modeladmin, request, queryset):
    """Django's "Delete selected", for a selection of any size.

    Django's confirmation page lists every product and posts each id back:
    past ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` (1,000) ids "Select all" could
    never be confirmed (400), after a page of megabytes. When every product
    of the list is selected ("Select all N products"), the page lists the
    first ``DELETE_LISTED`` and posts back the selection itself (the list's
    filters, in the URL) with the count the user saw; the deletion goes
    ahead only if the list still holds that many.
    """
    across = request.POST.get("select_across") == "1"
    if across and request.POST.get("post"):
        # The count and the deletion see the same products (a product created
        # after the count was deleted with the rest, unconfirmed).
        with modeladmin.model.objects.using(router.db_for_write(modeladmin.model)).one_snapshot():
            now = queryset.count()
            if request.POST.get("confirmed_count") != str(now):
                modeladmin.message_user(
                    request,
                    f"The selection changed since you confirmed it ({now:,} products now, "
                    f"{request.POST.get('confirmed_count') or '?'} confirmed); nothing was deleted.",
                    messages.ERROR,
                )
                return None
            return delete_selected(modeladmin, request, queryset)
    response = delete_selected(modeladmin, request, queryset)
    if response is not None and across:
        context = response.context_data
        listed = context["deletable_objects"][0]
        if len(listed) > DELETE_LISTED:
            rest = len(listed) - DELETE_LISTED
            context["deletable_objects"] = [[*listed[:DELETE_LISTED], f"… and {rest:,} more"]]
        context["select_across"] = True
        context["confirmed_count"] = queryset.count()
        # Django runs a confirmed action only with some ids posted: the page's, as they came.
        context["selected_on_page"] = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
    return response


def _not_an_id(field: models.Field, value: str) -> bool:
    # An integer id is ASCII digits only: int() also takes "３", "1_0" and " 5 ".
    return isinstance(field, models.IntegerField) and not (value.isascii() and value.isdigit())


@admin.register(Product)
class ProductAdmin(RefusedLookupsAreBadLookups, admin.ModelAdmin):
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

    delete_selected_confirmation_template = "admin/products/product/delete_selected_confirmation.html"

    def get_search_results(self, request, queryset, search_term):
        if connections[queryset.db].vendor != "sqlite":
            return super().get_search_results(request, queryset, search_term)
        # Django's search is name__icontains per word, and SQLite's LIKE folds
        # ASCII only ("ärger" would not find "Ärger"): each word is looked for
        # in the name folded as the API's search folds it (filters.py).
        folded = queryset.alias(folded_name=CaseFold("name"))
        for word in smart_split(search_term):
            if word[:1] in ('"', "'") and word[-1:] == word[:1] and len(word) > 1:
                word = unescape_string_literal(word)
            folded = folded.filter(folded_name__contains=fold_case(word))
        return folded, False

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            _, name, description = actions["delete_selected"]
            actions["delete_selected"] = (delete_selected_across, name, description)
        return actions

    def get_urls(self):
        opts = self.model._meta
        name = f"{opts.app_label}_{opts.model_name}_import"
        view = self.admin_site.admin_view(lambda request: import_view(self, request))
        return [path("import/", view, name=name), *super().get_urls()]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except IntegrityError as exc:
            if request.method != "POST" or not duplicate_key(exc):
                raise
        # Two saves of one name at once: both forms found it free, and the
        # unique index stopped this one (its transaction is rolled back). The
        # form again: its validation now finds the name taken and says so, as
        # the API answers 409.
        return super().changeform_view(request, object_id, form_url, extra_context)

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
        with transaction.atomic(using=router.db_for_write(Product)):
            # Products already at 0 are left alone: touching them would move
            # their updated_at and ETag, and an editor or API client holding
            # the old ones would be refused (412) for a change nobody made.
            in_stock = queryset.exclude(quantity=0)
            changed = list(in_stock.values_list("pk", flat=True)[: HISTORY_LIMIT + 1])
            already = queryset.filter(quantity=0).count()  # before: the list may be filtered on stock
            count = in_stock.update(quantity=0)
            note = f" ({already} already were)" if already else ""
            if len(changed) <= HISTORY_LIMIT:  # the History, as a save in the change form writes it
                log_history(request, changed, CHANGE, [{"changed": {"fields": ["Quantity"]}}])
            else:
                note += f" (no History entries: more than {HISTORY_LIMIT:,} products changed at once)"
        self.message_user(request, f"Marked {count} product(s) out of stock.{note}", messages.SUCCESS)


# The site's other lists (users, groups, tokens: registered by their apps,
# which come before this one in INSTALLED_APPS) get the same guard.
for _model, _model_admin in list(admin.site._registry.items()):
    if not isinstance(_model_admin, RefusedLookupsAreBadLookups):
        admin.site.unregister(_model)
        admin.site.register(
            _model, type(type(_model_admin).__name__, (RefusedLookupsAreBadLookups, type(_model_admin)), {})
        )
