"""System checks: misconfiguration is caught by ``manage.py check``, not at request time."""

from django.conf import settings
from django.core.checks import Error, Info, Tags, Warning, register


@register()
def check_product_cache(app_configs, **kwargs):
    return product_cache_problems(
        settings.CACHES.get("default", {}), getattr(settings, "PRODUCT_CACHE_TIMEOUT", None)
    )


def product_cache_problems(cache_config: dict, timeout: object) -> list:
    """Return the check messages for a default-cache configuration and timeout."""
    errors = []
    backend = cache_config.get("BACKEND", "")
    if backend != "django_redis.cache.RedisCache":
        errors.append(
            Error(
                "The default cache must be django-redis.",
                hint="products.cache runs Lua scripts on Redis; set CACHES['default']['BACKEND'] "
                "to 'django_redis.cache.RedisCache'.",
                id="products.E001",
            )
        )
    if not isinstance(timeout, int) or timeout <= 0:
        errors.append(
            Error(
                "PRODUCT_CACHE_TIMEOUT must be a positive number of seconds.",
                hint="Set the PRODUCT_CACHE_TIMEOUT environment variable, e.g. 60.",
                id="products.E002",
            )
        )
    options = cache_config.get("OPTIONS", {})
    if not options.get("SOCKET_TIMEOUT") or not options.get("SOCKET_CONNECT_TIMEOUT"):
        errors.append(
            Warning(
                "The Redis cache has no socket timeout.",
                hint="Without one, a hung Redis stalls every request; set REDIS_SOCKET_TIMEOUT.",
                id="products.W001",
            )
        )
    return errors


@register()
def check_near_cache(app_configs, **kwargs):
    return near_cache_notes(
        settings.PRODUCT_NEAR_CACHE,
        settings.PRODUCT_CACHE_ENABLED,
        settings.CACHES.get("default", {}).get("OPTIONS", {}).get("SOCKET_TIMEOUT"),
        settings.PRODUCT_NEAR_CACHE_SIZE,
    )


def near_cache_notes(enabled: bool, cache_enabled: bool, socket_timeout, size: int = 1) -> list:
    """Say when the near cache (products.nearcache) is off, or configured unsafely."""
    from .nearcache import PROOF_WINDOW

    if not enabled:
        off = "PRODUCT_NEAR_CACHE is off"
    elif not cache_enabled:
        off = "PRODUCT_CACHE_ENABLED is off"
    elif size <= 0:
        off = "PRODUCT_NEAR_CACHE_SIZE is 0"
    else:
        off = ""
    if off:
        return [Info(f"The product near cache is off: {off}.", id="products.I001")]
    if not socket_timeout or socket_timeout <= PROOF_WINDOW:
        return [
            Error(
                f"REDIS_SOCKET_TIMEOUT must exceed the near cache's proof window ({PROOF_WINDOW} s).",
                hint="A writer must wait longer for a hung Redis than a near hit may go unproven; "
                "raise REDIS_SOCKET_TIMEOUT or set PRODUCT_NEAR_CACHE=0.",
                id="products.E003",
            )
        ]
    return []


@register(Tags.caches)
def check_redis_topology(app_configs, **kwargs):
    """Report mistakes in REDIS_URL / REDIS_SENTINELS / REDIS_CLUSTER_NODES (productsite.redis_config)."""
    topology = getattr(settings, "REDIS_TOPOLOGY", None)
    if topology is None:
        return []
    return [Error(p.msg, hint=p.hint, id=p.id) for p in topology.problems]


@register()
def check_sqlite_export_writer(app_configs, **kwargs):
    """Warn when the export's SQLite writer is off (products.filewriters.sqlite_lines_match)."""
    from django.db import connections

    from products.filewriters import sqlite_lines_match

    # Vendor only: the writer is tried on a private in-memory SQLite.
    if connections["default"].vendor != "sqlite":
        return []
    return export_writer_notes({(fmt, safe): sqlite_lines_match(fmt, safe) for fmt, safe in EXPORT_WRITERS})


EXPORT_WRITERS = (("csv", False), ("csv", True), ("json", False), ("jsonl", False))


def export_writer_notes(matches: dict) -> list:
    """Return a warning naming the formats whose SQLite writer differs from the Python writer."""
    off = [f"{fmt}{' --spreadsheet-safe' if safe else ''}" for (fmt, safe), ok in matches.items() if not ok]
    if not off:
        return []
    return [
        Warning(
            "The export's SQLite writer does not match the Python writer here: "
            + ", ".join(off)
            + " exports use the slower Python writer.",
            hint="This SQLite or Python formats some value differently (products.filewriters "
            "sqlite_lines_match); the files stay correct.",
            id="products.W030",
        )
    ]


@register()
def check_direct_product_read(app_configs, **kwargs):
    """Warn when SQLite reads products through Django's cursor (products.selectors' direct read is off)."""
    from django.db import connections

    from products.selectors import direct_read_configured

    connection = connections["default"]
    if connection.vendor != "sqlite" or not settings.PRODUCT_SQLITE_DIRECT_READ:
        return []  # other databases never use it; off on purpose is not a problem
    if direct_read_configured(connection):
        return []
    return [
        Warning(
            "The product cache's misses and the list's pages read SQLite through Django's cursor: "
            "the direct reads (products.selectors) need USE_TZ on and the database's TIME_ZONE UTC.",
            hint="Reads stay correct, only slower. Set USE_TZ = True and leave DATABASES TIME_ZONE unset.",
            id="products.W040",
        )
    ]
