"""gunicorn settings, read from the environment.

Run: gunicorn productsite.wsgi:application   (this file is picked up from the
working directory). Every value can be overridden on the command line.
"""

import ipaddress
import multiprocessing
import os
import sys
from pathlib import Path

import environ

from productsite.envwords import FALSE_WORDS, TRUE_WORDS  # gunicorn put the project on sys.path


class _DotEnv(environ.Env):
    ENVIRON: dict[str, str] = {}  # read_env fills this, not os.environ


# The same .env the app reads (productsite/settings.py) fills in what the
# environment leaves unset, here too: GUNICORN_BIND or WEB_CONCURRENCY put
# there would otherwise reach Django but not gunicorn. Read into a dict of
# its own: in os.environ its values would pass for the real environment's
# and outlive an edit of the file (without preload, a HUP then reads it anew).
_DotEnv.read_env(os.environ.get("ENV_FILE", Path(__file__).resolve().parent / ".env"))


def _get(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, _DotEnv.ENVIRON.get(name, default))


def _refuse(name: str, problem: str) -> None:
    # A mistake is one line and exit status 4 (gunicorn's "failed to load",
    # no restart loop), as for the app's own settings (productsite/startup.py).
    print(f"gunicorn.conf.py: configuration error: {name}: {problem}", file=sys.stderr)
    raise SystemExit(4)


def _int(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    value = _get(name, str(default)).strip()
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        _refuse(name, f"{value!r} is not a whole number {bounds}.")
    return number


def _bool(name: str, default: bool) -> bool:
    value = _get(name, "").strip().lower()
    if not value:  # empty counts as unset, as in the app's settings and scripts/run.sh
        return default
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    _refuse(name, f"{value!r} is not one of 1/0, true/false, yes/no, on/off.")


def _networks(name: str, default: str) -> str:
    value = _get(name, default)
    for entry in value.split(","):
        entry = entry.strip()
        if entry in ("*", ""):  # empty: trust no proxy
            continue
        try:
            ipaddress.ip_network(entry)  # strict, as gunicorn's own check: no host bits
        except ValueError:
            _refuse(
                name, f"{entry!r} is not an IP address or network (e.g. 10.0.0.0/8; no host bits), nor *."
            )
    return value


# Loopback unless told otherwise: the expected front is a reverse proxy on
# this host (whose X-Forwarded-For the app then trusts, FORWARDED_ALLOW_IPS).
# Serving other hosts directly is a choice: GUNICORN_BIND=0.0.0.0:8000.
bind = _get("GUNICORN_BIND") or f"127.0.0.1:{_int('PORT', 8000, minimum=1, maximum=65535)}"
# Processes x threads per process. The default, 2 x cores + 1 workers, suits a
# mostly I/O-bound app (database, Redis); threads help with slow clients.
# (gunicorn itself reads WEB_CONCURRENCY before this file, as its default: a
# value that is not a number fails there, with gunicorn's traceback.)
workers = _int("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1, minimum=1)
threads = _int("GUNICORN_THREADS", 1, minimum=1)
# Behind a load balancer keep-alive must outlast the balancer's idle timeout
# toward the app, or the balancer sends requests on connections we closed.
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# A worker silent this long is killed and replaced; a request cannot take longer.
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Recycle workers now and then, jittered so they do not all restart at once.
max_requests = _int("GUNICORN_MAX_REQUESTS", 10000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 1000)
# Load the application once in the master and fork the workers from it: the
# loaded code and objects (frozen out of the garbage collector's walks by
# productsite/wsgi.py) stay shared, ~15 MiB less PSS per worker (docs/
# performance.md, "Worker memory"). Safe to fork: on_starting (below) stops the
# master's outbox applier, which closes its database connection, and each
# worker starts its own (post_worker_init); redis-py and prometheus_client
# start afresh in a new process.
# A change of code or .env then needs a restart, not a HUP (the master read
# both: the settings put .env in its environment). GUNICORN_PRELOAD=0: off.
preload_app = _bool("GUNICORN_PRELOAD", True)

# Logs to stdout/stderr, for the platform to collect. The app logs one line
# per request (products.requests, with its request id), so gunicorn's access
# log is off unless GUNICORN_ACCESS_LOG names a file ("-": stdout).
accesslog = _get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = _get("LOG_LEVEL", "info").lower()
access_log_format = (
    'remote=%(h)s method=%(m)s path="%(U)s" query="%(q)s" status=%(s)s '
    'bytes=%(B)s duration_ms=%(M)s x_cache=%({x-cache}o)s request_id=%({x-request-id}o)s ua="%(a)s"'
)
# Every access-log field escaped: a path with %0a cannot forge a line.
logger_class = "productsite.gunicorn_logging.EscapingLogger"
# A request gunicorn refuses itself (request line over 4 KB, headers over its
# limits, a malformed line or header) is answered as the API answers errors:
# JSON with an X-Request-ID, not gunicorn's HTML page. Replaced here, in the
# master, before the workers fork; kept as HTML (and `manage.py check` says
# so, productsite.W003) if gunicorn's writer is no longer the one mirrored.
from productsite import gunicorn_errors  # noqa: E402 (gunicorn put the project on sys.path)

if not gunicorn_errors.install():
    print("gunicorn.conf.py: gunicorn's own error pages stay HTML (see manage.py check)", file=sys.stderr)
# Trust X-Forwarded-* from these addresses (the proxy); the app reads the same
# variable, with the same default, for the client address it throttles
# (products/addresses.py). Django reads X-Forwarded-Proto itself when
# USE_X_FORWARDED_PROTO is set.
# (gunicorn reads FORWARDED_ALLOW_IPS itself too, before this file: a bad
# value stops it there, with its own one-line message.)
forwarded_allow_ips = _networks("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# gunicorn would also take SCRIPT_NAME from a request header of those peers
# (its default forwarder_headers), which a client can send through
# a proxy that passes them on: a prefix that is not the path's answered 500, and
# one that is chose the prefix of every URL the API writes. A deployment
# under a path prefix sets SCRIPT_NAME in gunicorn's environment instead.
forwarder_headers = ""

# gunicorn's control socket lives at one fixed path per user; several
# instances on a host (tests, benchmarks) would fight over it, and nothing
# here uses it.
control_socket_disable = True


# --- Prometheus metrics across workers -----------------------------------------
# Each worker writes its counters to files in PROMETHEUS_MULTIPROC_DIR and
# /metrics adds them up. The variable must be set before any worker imports
# prometheus_client, so it is set here, in the master. Without one given, a
# fresh private directory, removed when gunicorn exits.
_own_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import atexit
    import shutil
    import tempfile

    _own_metrics_dir = tempfile.mkdtemp(prefix="productsite-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir

    def _remove_own_metrics_dir(owner: int = os.getpid()) -> None:
        # Also when gunicorn stops before on_exit (a setting refused at
        # start); only in the master: a worker exits through here too.
        if os.getpid() == owner:
            shutil.rmtree(_own_metrics_dir, ignore_errors=True)

    atexit.register(_remove_own_metrics_dir)
else:
    try:
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    except OSError as exc:
        _refuse(
            "PROMETHEUS_MULTIPROC_DIR",
            f"cannot create {os.environ['PROMETHEUS_MULTIPROC_DIR']!r} ({exc.strerror}).",
        )


def on_starting(server) -> None:
    # With preload_app this master loaded productsite/wsgi.py, which started
    # the outbox applier. The master serves no request: stop it, and let each
    # worker run its own (post_worker_init). Left running, it held a database
    # connection and a Redis client for nothing, and counted its Redis
    # failures in metric files removed just below, so /metrics never showed them.
    if "products.applier" in sys.modules:
        sys.modules["products.applier"].stop_applier()
    # Files left by an earlier run would be added to this one's counts.
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.unlink(os.path.join(directory, name))


def post_worker_init(worker) -> None:
    # The worker's own outbox applier (a preloading master stopped its own,
    # above; without preload the worker's load of wsgi.py already started it).
    from products.applier import start_applier

    start_applier()


def child_exit(server, worker) -> None:
    # A dead worker's live gauges (e.g. an open breaker) must stop counting;
    # its counts stay, in one archive file rather than two files per worker.
    from prometheus_client import multiprocess

    from products import metricfiles

    multiprocess.mark_process_dead(worker.pid)
    try:
        metricfiles.fold_dead_worker(worker.pid)
    except Exception as exc:  # in the arbiter's loop: an error here would stop gunicorn
        server.log.warning(
            "Could not fold worker %s's metric files (%s: %s)", worker.pid, type(exc).__name__, exc
        )


# gunicorn reads at most this much of a body the service left unread before it
# serves the next request on the connection (64 KiB in gunicorn 27); past that it
# closes the connection, after an answer that said keep-alive. A 413 leaves its
# body unread, and the client's next request on that connection then failed.
UNREAD_BODY_DRAINED = 64 * 1024


def pre_request(worker, req) -> None:
    # A body that large, or of no declared length (chunked), gets its answer
    # with Connection: close. Every such request costs a new connection: uploads
    # and refusals only, never a read of the API.
    length = getattr(req.body.reader, "length", None)
    if length is None or length > UNREAD_BODY_DRAINED:
        req.force_close()


def on_exit(server) -> None:
    if _own_metrics_dir:
        import shutil

        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
