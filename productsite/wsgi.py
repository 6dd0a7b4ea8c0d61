import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "productsite.settings")

from productsite.startup import exit_on_bad_settings

# A setting the operator must fix (SECRET_KEY, DATABASE_URL, ...): one line
# and gunicorn's "application failed to load" status, not a traceback.
exit_on_bad_settings()

# Before Django loads the apps: DRF's compat module would import every
# optional package installed (psycopg on SQLite, requests, ...) into each worker.
from productsite.lean_imports import import_drf_compat  # noqa: E402

import_drf_compat()

application = get_wsgi_application()

# Django rewrites a path that is not UTF-8 into a valid-looking one: note it
# while it can still be told apart (RefuseNulMiddleware then answers 404).
from products.request_guards import MarkUndecodablePaths  # noqa: E402

application = MarkUndecodablePaths(application)

from django.conf import settings  # noqa: E402

from productsite.worker_memory import freeze_heap, limit_malloc_arenas, load_what_requests_load  # noqa: E402

# Before this process starts a thread (the applier below, gunicorn's request threads).
limit_malloc_arenas(settings.WORKER_MALLOC_ARENAS)

# A malformed REDIS_* setting is a system check error; gunicorn runs no
# checks, so refuse to serve here rather than use a Redis nobody named.
from productsite.redis_config import exit_on_problems  # noqa: E402

exit_on_problems(settings.REDIS_TOPOLOGY)

# HEAD gets headers only (the fast path answers GET alone, so inside it is enough).
from productsite.head_requests import OmitHeadBodies  # noqa: E402

application = OmitHeadBodies(application)

# Successful authenticated JSON creates are answered in front of Django too
# (the API's own checks, save and headers); anything else goes to Django.
from productsite.fastcreate import FastProductCreates  # noqa: E402  (needs django.setup())

application = FastProductCreates(application)

# Anonymous JSON product reads are answered in front of Django (same headers,
# throttle and cache) when the configuration is the one the fast path mirrors;
# everything else goes to Django unchanged.
from productsite.fastpath import FastProductReads  # noqa: E402  (needs django.setup())

application = FastProductReads(application)

# Outermost: a client that is not a trusted proxy cannot say it came over
# HTTPS (X-Forwarded-Proto) or name the host (X-Forwarded-Host), to Django
# or to the fast paths.
from products.request_guards import DropUntrustedProxyHeaders  # noqa: E402

application = DropUntrustedProxyHeaders(application)

# Everything loaded so far lives as long as the process: out of the garbage
# collector's walks (and, under preload_app, shared with the master), with
# what the first requests would load (the URLconf, the cache backends).
load_what_requests_load()
freeze_heap()

# This process serves requests: apply the invalidations that writers (here or
# in processes that have exited) recorded while Redis was unreachable.
from products.applier import start_applier  # noqa: E402

start_applier()
