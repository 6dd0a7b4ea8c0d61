import re
from importlib import import_module

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.urls import include, path, re_path
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import RedirectView
from rest_framework.exceptions import MethodNotAllowed

from products import monitoring, views
from products.admin_site import logout_confirmation
from products.api_root import ServiceRouter
from products.exceptions import answers_json, json_error
from products.validators import NAME_URL_PATTERN
from productsite import staticfiles


def _docs_view(name: str, **initkwargs):
    """Return the schema or docs view ``name`` (productsite.schema_views), imported on its first request.

    Its module brings drf-spectacular's views and generator; a server
    process that never serves the docs never pays for them in memory.
    """
    view = None

    @csrf_exempt  # as DRF's own views are
    def lazy_view(request, *args, **kwargs):
        nonlocal view
        if view is None:
            view = getattr(import_module("productsite.schema_views"), name).as_view(**initkwargs)
        return view(request, *args, **kwargs)

    return lazy_view


def confirm_then_logout(request):
    if request.method in ("GET", "HEAD"):
        return logout_confirmation(request)
    return LogoutView.as_view()(request)


@method_decorator(csrf_exempt, name="dispatch")  # it writes nothing: a PUT is a 405, not a CSRF failure
class SiteRoot(RedirectView):
    """``/``: GET, HEAD and OPTIONS lead to the API root; another method is a 405, JSON to a client that prefers it."""

    pattern_name = "api-root"
    permanent = False
    http_method_names = ["get", "head", "options"]

    def http_method_not_allowed(self, request, *args, **kwargs):
        response = super().http_method_not_allowed(request, *args, **kwargs)
        if answers_json(request):  # as the API's 405s and every other error page here
            allow = response["Allow"]
            response = json_error(MethodNotAllowed(request.method).detail, 405)
            response["Allow"] = allow
        return response


router = ServiceRouter()
# Names may contain dots; "name.json" is a name, not a format suffix.
router.include_format_suffixes = False
router.register("products", views.ProductViewSet, basename="product")

urlpatterns = [
    # A newcomer opening the server's address lands on the API root, which links the docs.
    path("", SiteRoot.as_view(), name="home"),
    path("api/", include(router.urls)),
    path("api/schema/", _docs_view("SchemaView"), name="schema"),
    path("api/docs/", _docs_view("SwaggerView", url_name="schema"), name="swagger-ui"),
    # Our template: the stock one loads Google Fonts, and the docs work offline.
    path(
        "api/redoc/",
        _docs_view("RedocView", url_name="schema", template_name="products/redoc.html"),
        name="redoc",
    ),
    # Before DRF's: a GET shows a button that logs out (Django's view answers an empty 405).
    path("api-auth/logout/", confirm_then_logout),
    path("api-auth/", include("rest_framework.urls")),
    path("favicon.ico", staticfiles.favicon, name="favicon"),
    path("health/", monitoring.health, name="health"),
    path("health/live/", monitoring.health_live, name="health-live"),
    path("health/ready/", monitoring.health_ready, name="health-ready"),
    path("metrics", monitoring.metrics_view, name="metrics"),
    # The original Flask service's routes, kept working.
    path("products", views.LegacyProductListView.as_view(), name="legacy-product-list"),
    re_path(
        rf"^products/(?P<name>{NAME_URL_PATTERN})$",
        views.LegacyProductDetailView.as_view(),
        name="legacy-product-detail",
    ),
    path("admin/", admin.site.urls),
]

# JSON errors (no traceback) under the API's paths; HTML elsewhere.
handler400 = "products.exceptions.handler400"
handler403 = "products.exceptions.handler403"
handler404 = "products.exceptions.handler404"
handler500 = "products.exceptions.handler500"

if staticfiles.uncollected():
    # Before collectstatic: the files from the apps, so the pages still work.
    urlpatterns.append(
        re_path(rf"^{re.escape(settings.STATIC_URL.lstrip('/'))}(?P<path>.+)$", staticfiles.serve_uncollected)
    )
