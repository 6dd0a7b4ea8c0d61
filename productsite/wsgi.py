import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "productsite.settings")

# Before Django loads the apps: DRF's compat module would import every
# optional package installed (psycopg on SQLite, requests, ...) into each worker.
from productsite.lean_imports import import_drf_compat

import_drf_compat()

application = get_wsgi_application()

# Anonymous JSON product reads are answered before Django's machinery (same
# headers, throttle and cache); everything else goes to Django unchanged.
from products.fastpath import FastProductReads  # noqa: E402  (needs django.setup())

application = FastProductReads(application)
