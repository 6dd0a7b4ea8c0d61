"""Keep packages a server process never uses out of its memory.

DRF's ``rest_framework.compat`` imports every optional package it can find,
whether the project uses it or not: ``django.contrib.postgres`` (and with it
psycopg) even on SQLite, ``requests`` (only for DRF's test client), pygments, markdown, PyYAML, uritemplate and inflection (only for
DRF's own schema generation; drf-spectacular imports what it needs itself,
when the schema is asked for). Every gunicorn worker paid for all of them.

:func:`import_drf_compat` imports that module once with those packages
hidden, so it records them as absent, then un-hides them: any code that really
needs one later imports it as usual. psycopg and django.contrib.postgres stay
visible when the database is PostgreSQL.
"""

from __future__ import annotations

import sys

UNUSED_BY_THE_SERVER = ("requests", "pygments", "markdown", "yaml", "uritemplate", "inflection")
# django.contrib.postgres fails to import without its driver, but only after
# loading half of itself; hidden, DRF records it absent at once.
POSTGRES_ONLY = ("psycopg", "psycopg2", "django.contrib.postgres")


def import_drf_compat() -> None:
    """Import rest_framework.compat without the optional packages the server does not use."""
    if "rest_framework.compat" in sys.modules:
        return
    from django.conf import settings

    hidden = list(UNUSED_BY_THE_SERVER)
    engines = {db.get("ENGINE", "") for db in settings.DATABASES.values()}
    if not any("postgres" in engine for engine in engines):
        hidden += POSTGRES_ONLY
    hidden = [name for name in hidden if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # an import of a None entry raises ImportError
    try:
        import rest_framework.compat  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
