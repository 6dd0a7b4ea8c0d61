from django.apps import AppConfig


class ProductsiteConfig(AppConfig):
    """The deployment's own hooks: its system checks (the fast paths, gunicorn's error pages)."""

    name = "productsite"
    verbose_name = "Product site (deployment)"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
