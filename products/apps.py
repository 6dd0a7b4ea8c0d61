from django.apps import AppConfig


class ProductsConfig(AppConfig):
    name = "products"
    verbose_name = "Products"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

        from . import (
            checks,  # noqa: F401  (registers the system checks)
            receivers,
        )
        from .models import Product

        for signal, uid in ((pre_save, "save"), (pre_delete, "delete")):
            signal.connect(
                receivers.remember_stored_name,
                sender=Product,
                dispatch_uid=f"products.remember_stored_name.{uid}",
            )
        post_save.connect(
            receivers.invalidate_product_on_save,
            sender=Product,
            dispatch_uid="products.invalidate_product_on_save",
        )
        post_delete.connect(
            receivers.invalidate_product_on_delete,
            sender=Product,
            dispatch_uid="products.invalidate_product_on_delete",
        )
        connection_created.connect(
            receivers.register_sqlite_functions, dispatch_uid="products.register_sqlite_functions"
        )
        connection_created.connect(
            receivers.count_queries_in_metrics, dispatch_uid="products.count_queries_in_metrics"
        )
