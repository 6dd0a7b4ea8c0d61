"""gunicorn settings, read from the environment.

Run: gunicorn productsite.wsgi:application   (this file is picked up from the
working directory). Every value can be overridden on the command line.
"""

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# Loopback unless told otherwise: the expected front is a reverse proxy on
# this host (whose X-Forwarded-For the app then trusts, FORWARDED_ALLOW_IPS).
# Serving other hosts directly is a choice: GUNICORN_BIND=0.0.0.0:8000.
bind = os.environ.get("GUNICORN_BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
# Processes x threads per process. The default, 2 x cores + 1 workers, suits a
# mostly I/O-bound app (database, Redis); threads help with slow clients.
workers = _int("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1)
threads = _int("GUNICORN_THREADS", 1)
# Behind a load balancer keep-alive must outlast the balancer's idle timeout
# toward the app, or the balancer sends requests on connections we closed.
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# A worker silent this long is killed and replaced; a request cannot take longer.
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Recycle workers now and then, jittered so they do not all restart at once.
max_requests = _int("GUNICORN_MAX_REQUESTS", 10000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 1000)

# Logs to stdout/stderr, for the platform to collect.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None  # empty: no access log
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
access_log_format = (
    'remote=%(h)s method=%(m)s path="%(U)s" query="%(q)s" status=%(s)s '
    'bytes=%(B)s duration_ms=%(M)s x_cache=%({x-cache}o)s ua="%(a)s"'
)
# Trust X-Forwarded-* from these addresses (the proxy); the app reads the same
# variable, with the same default, for the client address it throttles
# (products/addresses.py). Django reads X-Forwarded-Proto itself when
# USE_X_FORWARDED_PROTO is set.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# gunicorn's control socket lives at one fixed path per user; several
# instances on a host (tests, benchmarks) would fight over it, and nothing
# here uses it.
control_socket_disable = True
