"""The service with the fast path as a Django middleware instead of a WSGI wrapper.

For the measurement in docs/performance.md ("The fast path"): bench/run.py
--variant middleware:DJANGO_SETTINGS_MODULE=bench.fastpath_mw.settings
"""

from productsite.settings import *  # noqa: F403

# Where Django puts FetchFromCacheMiddleware: last, so every other middleware
# still applies to the cached answer.
MIDDLEWARE = [*MIDDLEWARE, "bench.fastpath_mw.middleware.CachedProductMiddleware"]  # noqa: F405
