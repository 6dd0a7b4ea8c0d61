"""Keep a server process's heap small (worker memory, issue 15).

Taken by productsite/wsgi.py:

* :func:`limit_malloc_arenas` (before any thread starts): glibc gives each
  thread that allocates its own malloc arena, and an arena keeps what it once
  held. A gunicorn ``gthread`` worker runs three threads (the request thread,
  the outbox applier, gunicorn's main loop); the request thread's arena grew
  (SQLite's page cache, request buffers) beside the main heap's free space.
  One arena per process (what it saves: docs/performance.md, "Worker memory").
  Python's own small objects are not affected (they live in obmalloc's
  arenas, under the GIL). An operator's ``MALLOC_ARENA_MAX`` wins; other C
  libraries (musl, macOS) are left alone.
* :func:`load_what_requests_load`, then :func:`freeze_heap` (once the
  application is loaded): moves every object allocated so far, with what
  the first requests would load, out of the garbage collector's reach. Without
  ``preload_app`` it spares each full collection the walk over the objects
  loaded with the application; with it, the collections in a worker no
  longer write to the pages it shares with the master, so they stay shared
  (figures in docs/performance.md, "Worker memory").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

from django.conf import settings

M_ARENA_MAX = -8  # glibc's <malloc.h>


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas for this process; False when not applied."""
    if arenas <= 0 or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only  # noqa: B018
    except (OSError, AttributeError):
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def load_what_requests_load() -> None:
    """Import and build now what the first requests would, short of connecting.

    The URLconf brings the views, serializers, filters and DRF's generic
    views (~2 MiB); the rest below is what a worker still loaded on its first
    hot read, list and create (~5 MiB per worker, measured in process: see
    docs/performance-log.md, "Worker memory"). Under ``preload_app`` it then sits
    in the master's frozen, shared heap instead of in each worker. No
    connection is opened: the cache clients connect on first use, from the
    process that uses them, and so does the database.
    """
    from django.core.cache import caches
    from django.urls import get_resolver

    resolver = get_resolver()
    resolver.url_patterns  # noqa: B018  (imports the URLconf)
    resolver.reverse_dict  # noqa: B018  (reverse() and the API root read it)
    for alias in settings.CACHES:
        cache = caches[alias]
        # django-redis builds its client (serializer, compressor, key
        # functions; no pool, no socket) on first use.
        getattr(cache, "client", None)
    _load_first_request_modules()
    _load_fast_paths()


def _load_first_request_modules() -> None:
    """Modules that Django, django-redis and the socket layer import on first use."""
    import importlib

    from django.db.models.sql import compiler  # noqa: F401  (the first query)
    from django.utils.module_loading import import_string

    if "django.contrib.messages" in settings.INSTALLED_APPS:
        import_string(settings.MESSAGE_STORAGE)
        # The fallback storage's session half imports the session serializer.
        if "django.contrib.sessions" in settings.INSTALLED_APPS:
            import_string(settings.SESSION_SERIALIZER)
            importlib.import_module(settings.SESSION_ENGINE)
    # A host name is encoded with the IDNA codec (and stringprep) on the first
    # connection to it.
    "localhost".encode("idna")


def _load_fast_paths() -> None:
    """Run the fast read and create paths' configuration checks (resolve, serializer fields).

    Each checks once per process, on its first request; a settings change
    (tests) resets them, so this only moves the work before the fork.
    """
    from productsite import fastcreate, fastpath

    fastpath.setup().enabled()
    fastcreate._setup.enabled()


def freeze_heap() -> None:
    """Collect, then exempt every surviving object from later collections."""
    gc.collect()
    gc.freeze()
