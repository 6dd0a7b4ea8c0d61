from django.apps import AppConfig


class ProductsConfig(AppConfig):
    name = "products"
    verbose_name = "Products"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_login_failed
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_delete, post_migrate, post_save, pre_delete, pre_save

        from . import (
            auth_limits,
            cache,
            checks,  # noqa: F401  (registers the system checks)
            metrics,
            outbox,
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
        post_migrate.connect(
            receivers.retire_cache_after_data_migrations,
            sender=self,
            dispatch_uid="products.retire_cache_after_data_migrations",
        )
        if outbox.record_missed_invalidation not in cache.missed_invalidation_hooks:
            cache.missed_invalidation_hooks.append(outbox.record_missed_invalidation)
        metrics.register_outbox_reader(outbox.pending_summary)
        connection_created.connect(
            receivers.register_sqlite_functions, dispatch_uid="products.register_sqlite_functions"
        )
        connection_created.connect(
            receivers.count_queries_in_metrics, dispatch_uid="products.count_queries_in_metrics"
        )
        user_login_failed.connect(auth_limits.count_failed_login, dispatch_uid="products.count_failed_login")
