from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class ProductAdminConfig(AdminConfig):
    """Django's admin, on a site whose password-change form counts wrong old passwords (products.admin_site)."""

    default_site = "products.admin_site.ProductAdminSite"


class ProductsConfig(AppConfig):
    name = "products"
    verbose_name = "Products"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

        _connect_product_receivers(self)
        _connect_token_receivers()
        _wire_the_cache()
        _connect_process_receivers()


def _connect_product_receivers(app: AppConfig) -> None:
    """Every write of a product, and a data migration, invalidates after commit."""
    from django.db.models.signals import post_delete, post_migrate, post_save, pre_delete, pre_save

    from . import receivers
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
        sender=app,
        dispatch_uid="products.retire_cache_after_data_migrations",
    )


def _connect_token_receivers() -> None:
    """Cached token authentications (products.token_cache) depend on these rows and links; any change drops them all."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.models import ContentType
    from django.db.models.signals import m2m_changed, post_delete, post_save
    from rest_framework.authtoken.models import Token

    from . import receivers

    user = get_user_model()
    for model in (user, Token, Group, Permission, ContentType):
        for signal, uid in ((post_save, "save"), (post_delete, "delete")):
            signal.connect(
                receivers.invalidate_cached_tokens,
                sender=model,
                dispatch_uid=f"products.invalidate_cached_tokens.{model._meta.label_lower}.{uid}",
            )
    links = [Group.permissions.through]
    links += [getattr(user, name).through for name in ("groups", "user_permissions") if hasattr(user, name)]
    for through in links:
        m2m_changed.connect(
            receivers.invalidate_cached_tokens,
            sender=through,
            dispatch_uid=f"products.invalidate_cached_tokens.{through._meta.label_lower}",
        )


def _wire_the_cache() -> None:
    """Give the cache layers (which import nothing of the domain) the domain's hooks."""
    from . import (
        cache,
        cachekeys,
        metrics,
        missed,
        outbox,
        sentinelwatch,
        serverledger,
        token_cache,
        transport,
    )

    # A new connection's server is checked before it serves (cachekeys.adopt);
    # invalidations Redis missed are delivered before anything else once it answers.
    transport.register_adopt(cachekeys.adopt)
    transport.register_resync(missed.pending.deliver)
    cachekeys.register_server_marker(serverledger.marker)
    cache.register_after_delivery(serverledger.recheck_after_a_write)
    # On Sentinel: leave the old master as soon as the sentinels switch away from it.
    transport.register_first_use(sentinelwatch.watch)
    missed.add_hook(outbox.record_missed_invalidation)
    token_cache.add_hook(outbox.record_missed_token_invalidation)
    metrics.register_outbox_reader(outbox.pending_summary)


def _connect_process_receivers() -> None:
    """New database connections, failed sign-ins, and settings a test changes."""
    from django.contrib.auth.signals import user_login_failed
    from django.core.signals import setting_changed
    from django.db.backends.signals import connection_created

    from . import auth_limits, cachekeys, nearcache, receivers, selectors

    connection_created.connect(
        receivers.register_sqlite_functions, dispatch_uid="products.register_sqlite_functions"
    )
    connection_created.connect(
        receivers.count_queries_in_metrics, dispatch_uid="products.count_queries_in_metrics"
    )
    user_login_failed.connect(auth_limits.count_failed_login, dispatch_uid="products.count_failed_login")
    # What this process derived from settings, rebuilt when a test changes them.
    for receiver in (
        cachekeys.forget_key_prefixes_on_setting_change,
        nearcache.drop_near_cache_on_setting_change,
        selectors.forget_compiled_reads_on_setting_change,
    ):
        setting_changed.connect(receiver, dispatch_uid=f"products.{receiver.__name__}")
