from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from products import monitoring, views
from products.api_root import ServiceRouter
from products.validators import NAME_URL_PATTERN

router = ServiceRouter()
# Names may contain dots; "name.json" is a name, not a format suffix.
router.include_format_suffixes = False
router.register("products", views.ProductViewSet, basename="product")

urlpatterns = [
    # A newcomer opening the server's address lands on the API root, which links the docs.
    path("", RedirectView.as_view(pattern_name="api-root", permanent=False), name="home"),
    path("api/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    # Our template: the stock one loads Google Fonts, and the docs work offline.
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="products/redoc.html"),
        name="redoc",
    ),
    path("api-auth/", include("rest_framework.urls")),
    path("health/", views.health, name="health"),
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
