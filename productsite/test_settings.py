"""Settings for the test suite: productsite.settings with test-safe environment defaults.

Tests use their own Redis database number and a key prefix unique to the run,
so they never touch (or flush) data they did not write.
"""

import os
import uuid

os.environ.setdefault("SECRET_KEY", "insecure-key-for-tests-only")
os.environ.setdefault("REDIS_URL", os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9"))
os.environ.setdefault("CACHE_KEY_PREFIX", f"productsite-test-{uuid.uuid4().hex[:8]}")
os.environ.setdefault("THROTTLE_ANON_RATE", "100000/minute")
os.environ.setdefault("THROTTLE_USER_RATE", "100000/minute")
# Every test client comes from 127.0.0.1: the failed-login limits would add
# up over the whole run. Tests of the limits set their own.
os.environ.setdefault("AUTH_FAILURE_RATE_PER_ADDRESS", "100000/hour")
os.environ.setdefault("AUTH_FAILURE_RATE_PER_USERNAME", "100000/hour")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")

from .settings import *  # noqa: F403

# Hashing passwords at full strength makes every login in the suite slow.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests render pages without running collectstatic first: plain storage, and
# whitenoise serves the apps' static files through the finders (as runserver
# does) instead of from a STATIC_ROOT that does not exist. The production path
# (collectstatic into a compressed manifest, DEBUG off) is tested in a
# subprocess by products/tests/test_deployment_production.py.
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
# Tests that import productsite.wsgi in the test process must not get a
# background thread reading the test database; the outbox tests start and
# stop it themselves, and servers started by tests use productsite.settings.
PRODUCT_CACHE_OUTBOX_APPLIER = False
# The run's shared Redis gets a patient socket timeout: on a loaded machine
# (CI runs four lanes on two cores) Redis or this process now and then misses
# production's 0.1 s, the breaker opens, and a test that proves a cache hit,
# a throttle or a sign-in limit sees the documented fail-open instead. Nothing
# breaks that Redis on purpose; the servers and commands a test starts on it
# get the same timeout (support/processes.py server_env). The tests of
# outages use a redis-server of their own (conftest.py's private_redis):
# those that hang it (marked hangs_redis) get production's timeout back
# (PRODUCTION_REDIS_SOCKET_TIMEOUT), as do the servers and commands tests
# start on any other Redis (productsite.settings).
PRODUCTION_REDIS_SOCKET_TIMEOUT = REDIS_SOCKET_TIMEOUT  # noqa: F405 (REDIS_SOCKET_TIMEOUT's default)
SHARED_REDIS_URL = REDIS_URL  # noqa: F405
SHARED_REDIS_SOCKET_TIMEOUT = float(os.environ.get("TEST_SHARED_REDIS_SOCKET_TIMEOUT", "2.0"))
REDIS_SOCKET_TIMEOUT = SHARED_REDIS_SOCKET_TIMEOUT
CACHES["default"]["OPTIONS"]["SOCKET_TIMEOUT"] = REDIS_SOCKET_TIMEOUT  # noqa: F405
CACHES["default"]["OPTIONS"]["SOCKET_CONNECT_TIMEOUT"] = REDIS_SOCKET_TIMEOUT  # noqa: F405
# A fill lease outlives any stall of a loaded machine between a miss's
# database read and its fill (2 s did not: the fill was refused and a test's
# warm-up cached nothing). No test waits for a lease to expire.
PRODUCT_CACHE_LEASE_TIMEOUT = 10.0
