"""Settings for productsite, read from the environment with safe defaults.

Every value a deployment changes comes from an environment variable (see the
Configuration table in README.md). Nothing here is secret: DEBUG is off unless
asked for, and without DEBUG a SECRET_KEY must be given.
"""

import ipaddress
import math
import os
import re
import warnings
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from productsite import redis_config
from productsite.envwords import FALSE_WORDS, TRUE_WORDS

BASE_DIR = Path(__file__).resolve().parent.parent


class _Env(environ.Env):
    """django-environ's Env: a value that does not parse is a configuration error naming its variable.

    manage.py and gunicorn print an ImproperlyConfigured as one line
    (productsite.startup); a bare ValueError would be a traceback.
    """

    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        if cast is bool and default is not environ.Env.NOTSET and not self.ENVIRON.get(var, "-").strip():
            return default  # blank counts as unset (productsite.envwords)
        try:
            return super().get_value(var, cast, default, parse_default)
        except (ValueError, TypeError) as exc:
            raise ImproperlyConfigured(
                f"{var}: {self.ENVIRON.get(var)!r} is not a valid value ({exc})."
            ) from None

    # django-environ reads "100ms" as 100.0 (it drops what is not a digit) and
    # any unknown word as False; both are mistakes to name, not to guess at.
    @classmethod
    def parse_value(cls, value, cast):
        if isinstance(value, str) and cast is bool:
            word = value.strip().lower()
            if word in TRUE_WORDS or word in FALSE_WORDS:
                return word in TRUE_WORDS
            raise ValueError("expected 1/0, true/false, yes/no or on/off")
        if isinstance(value, str) and cast is float:
            number = float(value.strip())  # "100ms" or "1,5": a ValueError
            if not math.isfinite(number):
                raise ValueError("expected a finite number")
            return number
        return super().parse_value(value, cast)

    def db_url(self, var="DATABASE_URL", default=environ.Env.NOTSET, engine=None) -> dict:
        try:
            with warnings.catch_warnings():
                # "Engine not recognized": said below, in one line naming the variable.
                warnings.simplefilter("ignore", UserWarning)
                config = super().db_url(var, default=default, engine=engine)
        except (ValueError, TypeError) as exc:
            raise ImproperlyConfigured(
                f"{var} is not a valid database URL ({exc}).".replace(str(self.ENVIRON.get(var)), "…")
            ) from None
        if config.get("ENGINE") not in ("django.db.backends.sqlite3", "django.db.backends.postgresql"):
            raise ImproperlyConfigured(
                f"{var}: only sqlite:///path and postgres://user@host:port/name are supported."
            )
        return config

    db = db_url


def _at_least(var: str, value, minimum, *, above: bool = False, maximum=None):
    """Return ``value``, or refuse it below ``minimum`` (at or below it with ``above``) or above ``maximum``."""
    if value < minimum or (above and value == minimum) or (maximum is not None and value > maximum):
        bound = f"greater than {minimum}" if above else f"at least {minimum}"
        bound += f" and at most {maximum}" if maximum is not None else ""
        raise ImproperlyConfigured(f"{var}: {value!r} is out of range; it must be {bound}.")
    return value


env = _Env()

# The most products a list page holds (?page_size= may ask up to it; products.pagination).
PAGE_SIZE_MAX = 500

# A local .env file (scripts/run.sh writes one holding a generated SECRET_KEY)
# fills in what the real environment leaves unset; it never overrides it.
ENV_FILE = Path(os.environ.get("ENV_FILE", BASE_DIR / ".env"))
# An exported but blank SECRET_KEY counts as unset, as in scripts/run.sh: the
# key .env holds applies, rather than "SECRET_KEY is not set" beside it.
if not os.environ.get("SECRET_KEY", "unset").strip():
    del os.environ["SECRET_KEY"]
if ENV_FILE.is_file():
    environ.Env.read_env(ENV_FILE)

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set the SECRET_KEY environment variable "
            "(any long random string), or set DEBUG=1 for local development."
        )
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"
# Earlier keys, still accepted while a rotation settles: signed cursors,
# sessions and password-reset links issued under them stay valid.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])

ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS",
    default=["127.0.0.1", "localhost", "[::1]", "testserver"] if DEBUG else [],
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# A refused CSRF check is JSON for a client that prefers JSON (as every other
# error page outside the API's paths), Django's HTML page for a browser.
CSRF_FAILURE_VIEW = "products.exceptions.csrf_failure"

INSTALLED_APPS = [
    "products.apps.ProductAdminConfig",  # django.contrib.admin, with products.admin_site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "products.apps.ProductsConfig",
    "productsite.apps.ProductsiteConfig",
]

MIDDLEWARE = [
    "products.middleware.RequestLogMiddleware",
    # Before anything reads the body (DRF's parsers ignore Django's limit).
    "products.middleware.BodySizeLimitMiddleware",
    # Before the session, the filters and the admin look anything up.
    "products.request_guards.RefuseNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Django's CommonMiddleware, with a 308 (method and body kept) for a write
    # to a URL missing its trailing slash.
    "products.trailing_slash.AppendSlashMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # 429 with Retry-After when the login pages refuse a guess.
    "products.auth_limits.FailedLoginLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "productsite.urls"
WSGI_APPLICATION = "productsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
# SQLite file by default; PostgreSQL (or anything dj-database-url knows) via
# DATABASE_URL. Connections persist across requests: reopening SQLite on every
# request is a large part of a cache miss (docs/performance.md).
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["CONN_MAX_AGE"] = _at_least("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=600), 0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Behind PgBouncer in transaction mode, server-side cursors must be off.
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env.bool("DISABLE_SERVER_SIDE_CURSORS", default=False)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several gunicorn workers share one file: WAL lets readers run beside
    # the writer, IMMEDIATE takes the write lock at BEGIN (so a transaction
    # never fails half-way on an upgrade), and the busy timeout makes writers
    # queue instead of answering "database is locked". SQLite's page cache
    # is per connection (2 MiB by default, in every worker); the file's pages
    # stay in the OS page cache, shared, so a smaller one costs a pread on a miss.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": _at_least("SQLITE_BUSY_TIMEOUT", env.float("SQLITE_BUSY_TIMEOUT", default=20.0), 0),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
        f"PRAGMA cache_size=-{_at_least('SQLITE_CACHE_KIB', env.int('SQLITE_CACHE_KIB', default=512), 0)};",
    }
    # A file (not :memory:) so live-server and threaded tests get real,
    # separate connections.
    DATABASES["default"]["TEST"] = {
        "NAME": env.str("SQLITE_TEST_NAME", default=str(BASE_DIR / "test-db.sqlite3"))
    }
else:
    DATABASES["default"]["TEST"] = {"NAME": env.str("DATABASE_TEST_NAME", default="") or None}
# A write waits at most this long for a row lock (a long import locks the
# rows it imports), then answers 503 with Retry-After, as SQLite's busy
# timeout does; without it the request waited until gunicorn killed the
# worker (GUNICORN_TIMEOUT, 30 s) and the client got an HTML 500.
# 0: the app sets none (PgBouncer refuses the "options" startup parameter;
# there, set lock_timeout on the database role: docs/production.md).
# Read on every database, so a mistake shows before a move to PostgreSQL.
_lock_ms = round(
    _at_least("DATABASE_LOCK_TIMEOUT", env.float("DATABASE_LOCK_TIMEOUT", default=10.0), 0) * 1000
)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and _lock_ms > 0:
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["options"] = f"{_options.get('options', '')} -c lock_timeout={_lock_ms}".strip()

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ------------------------------------------------------------------
# One Redis (REDIS_URL), Sentinel (REDIS_SENTINELS) or Cluster
# (REDIS_CLUSTER_NODES): productsite/redis_config.py reads which, and a
# mistake there is a system check error (products.checks), not a traceback.
REDIS_TOPOLOGY = redis_config.read_topology(os.environ)
REDIS_URL = REDIS_TOPOLOGY.url
# Seconds a cached product lives; read at call time by products.cache.
PRODUCT_CACHE_TIMEOUT = _at_least("PRODUCT_CACHE_TIMEOUT", env.int("PRODUCT_CACHE_TIMEOUT", default=60), 1)
# Bound on how long any request waits for Redis (seconds); a dead or paused
# Redis costs at most this, then the circuit breaker skips the cache.
REDIS_SOCKET_TIMEOUT = _at_least(
    "REDIS_SOCKET_TIMEOUT", env.float("REDIS_SOCKET_TIMEOUT", default=0.1), 0, above=True
)
# How long the breaker skips Redis after a failure before probing again.
PRODUCT_CACHE_BACKOFF = _at_least("PRODUCT_CACHE_BACKOFF", env.float("PRODUCT_CACHE_BACKOFF", default=1.0), 0)
# A fill lease lives this long (a dead filler blocks nobody past it), and a
# reader waits at most PRODUCT_CACHE_LEASE_WAIT for another reader's fill
# before reading the database itself.
PRODUCT_CACHE_LEASE_TIMEOUT = _at_least(
    "PRODUCT_CACHE_LEASE_TIMEOUT", env.float("PRODUCT_CACHE_LEASE_TIMEOUT", default=2.0), 0.001
)
PRODUCT_CACHE_LEASE_WAIT = _at_least(
    "PRODUCT_CACHE_LEASE_WAIT", env.float("PRODUCT_CACHE_LEASE_WAIT", default=0.5), 0
)
# How long a cached token authentication (user + permissions) may live; any
# change to them drops it at once, this only bounds an outage's leftovers.
# 0: tokens are not cached (each request reads them from the database).
AUTH_CACHE_TIMEOUT = _at_least("AUTH_CACHE_TIMEOUT", env.int("AUTH_CACHE_TIMEOUT", default=60), 0)
# A per-process near cache of hot products, kept honest by Redis CLIENT
# TRACKING (products.nearcache; one Redis, Sentinel or each master of a cluster), and
# how many products it holds.
PRODUCT_NEAR_CACHE = env.bool("PRODUCT_NEAR_CACHE", default=True)
PRODUCT_NEAR_CACHE_SIZE = _at_least(
    "PRODUCT_NEAR_CACHE_SIZE", env.int("PRODUCT_NEAR_CACHE_SIZE", default=1000), 0
)
# Throttle counts a process reserves from Redis at once (one INCRBY); never
# more than a hundredth of the limit (products.counters).
PRODUCT_THROTTLE_BATCH = _at_least("PRODUCT_THROTTLE_BATCH", env.int("PRODUCT_THROTTLE_BATCH", default=64), 1)
# Off: every product read comes from the database (throttling still counts in
# Redis). For measuring the uncached path; production keeps it on.
PRODUCT_CACHE_ENABLED = env.bool("PRODUCT_CACHE_ENABLED", default=True)
# Every server process checks the database for invalidations that a writer
# could not deliver (products.applier): every POLL seconds while none are
# pending (one indexed query), every RETRY seconds while they wait for Redis.
PRODUCT_CACHE_OUTBOX_APPLIER = env.bool("PRODUCT_CACHE_OUTBOX_APPLIER", default=True)
PRODUCT_CACHE_OUTBOX_POLL = _at_least(
    "PRODUCT_CACHE_OUTBOX_POLL", env.float("PRODUCT_CACHE_OUTBOX_POLL", default=1.0), 0, above=True
)
PRODUCT_CACHE_OUTBOX_RETRY = _at_least(
    "PRODUCT_CACHE_OUTBOX_RETRY", env.float("PRODUCT_CACHE_OUTBOX_RETRY", default=0.2), 0, above=True
)
# Anonymous JSON reads of one product are answered by productsite.fastpath in
# front of Django (same headers, throttle and cache) while MIDDLEWARE is the
# stack it mirrors (else it is off and check says productsite.W001), and so
# are successful authenticated JSON creates (productsite.fastcreate, W002);
# off sends every request through Django.
PRODUCT_FAST_PATH = env.bool("PRODUCT_FAST_PATH", default=True)
# On SQLite (UTC), a cache miss runs its compiled query on the sqlite3
# connection itself, around Django's cursor (products.selectors; check says
# products.W040 when SQLite cannot). Off for instrumentation that patches
# Django's cursor and must see every query.
PRODUCT_SQLITE_DIRECT_READ = env.bool("PRODUCT_SQLITE_DIRECT_READ", default=True)
# glibc malloc arenas per server process (productsite.worker_memory): one
# keeps the request thread's allocations in the main heap's free space;
# 0 leaves glibc's default (8 per core); MALLOC_ARENA_MAX, if set, wins.
WORKER_MALLOC_ARENAS = _at_least("WORKER_MALLOC_ARENAS", env.int("WORKER_MALLOC_ARENAS", default=1), 0)

CACHES = {
    "default": redis_config.cache_settings(
        REDIS_TOPOLOGY,
        # Blank counts as unset, as for the yes/no variables: a compose file
        # passing ${CACHE_KEY_PREFIX} through unset must not drop the prefix.
        key_prefix=env.str("CACHE_KEY_PREFIX", default="").strip() or "productsite",
        timeout=PRODUCT_CACHE_TIMEOUT,
        socket_timeout=REDIS_SOCKET_TIMEOUT,
        max_connections=_at_least("REDIS_MAX_CONNECTIONS", env.int("REDIS_MAX_CONNECTIONS", default=64), 1),
    )
}

# --- Auth, sessions -------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Django's ModelBackend behind the failed-login limits (products.auth_limits).
AUTHENTICATION_BACKENDS = ["products.authentication.LimitedModelBackend"]
LOGIN_URL = "rest_framework:login"
LOGIN_REDIRECT_URL = "/api/products/"

# --- REST framework ---------------------------------------------------------


def _rate(name: str, default: str, *, zero_means: str = "") -> str:
    """Read a throttle rate such as "100/minute"; refuse a typo at startup, not per request.

    A count of 0 refuses every request the rate counts; ``zero_means`` (what
    that would lock out) makes 0 a configuration error instead.
    """
    value = env.str(name, default=default).strip()
    if not re.fullmatch(r"[0-9]+/(s|sec|second|m|min|minute|h|hour|d|day)", value):
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a rate: use <requests>/<second|minute|hour|day>, e.g. 100/minute."
        )
    if zero_means and int(value.split("/")[0]) == 0:
        raise ImproperlyConfigured(f"{name}={value!r}: the count must be at least 1 ({zero_means}).")
    return value


def _forwarded_allow_ips() -> tuple[str, ...]:
    from products.addresses import parse_allowed

    value = env.str("FORWARDED_ALLOW_IPS", default="127.0.0.1,::1")
    try:
        return parse_allowed(value)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"FORWARDED_ALLOW_IPS={value!r}: {exc}. Use addresses or networks separated by commas, or *."
        ) from None


REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an anonymous write answers 401 with
        # "WWW-Authenticate: Token" rather than a bare 403.
        # DRF's, behind the failed-login limits, its answers cached in Redis
        # (products.token_cache) until the token, user or permissions change.
        "products.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.DjangoModelPermissionsOrAnonReadOnly",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "products.browsable.ProductBrowsableAPIRenderer",  # encoded links (names with # or ?)
    ],
    "DEFAULT_PARSER_CLASSES": [
        "products.parsers.ExactJSONParser",
        "products.parsers.StrictFormParser",
        "products.parsers.StrictMultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "products.throttling.AnonymousFixedWindowThrottle",
        "products.throttling.UserFixedWindowThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": _rate("THROTTLE_ANON_RATE", "1000/minute"),
        "user": _rate("THROTTLE_USER_RATE", "10000/minute"),
    },
    "DEFAULT_FILTER_BACKENDS": [
        # django-filter's, skipped when no filter parameter is given.
        "products.filters.ProductFilterBackend",
        # Unknown ordering fields answer 400 (DRF's own filter drops them).
        "products.filters.ProductOrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "products.pagination.ProductKeysetPagination",
    "PAGE_SIZE": _at_least("PAGE_SIZE", env.int("PAGE_SIZE", default=50), 1, maximum=PAGE_SIZE_MAX),
    "DEFAULT_SCHEMA_CLASS": "products.openapi.ProductAutoSchema",
    # OPTIONS names price and quantity decimal and integer, with their limits.
    "DEFAULT_METADATA_CLASS": "products.metadata.ProductMetadata",
    "EXCEPTION_HANDLER": "products.exceptions.api_exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Product catalogue API",
    "DESCRIPTION": "Products with cached reads, conditional requests and atomic stock changes.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    # No validator badge: it would fetch from validator.swagger.io, and the
    # docs must work with no internet.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "persistAuthorization": True, "validatorUrl": None},
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The API's contract is JSON; forms are a browsable-API convenience, and
    # advertising them breaks generated clients (docs/api-clients.md).
    "PARSER_WHITELIST": ["rest_framework.parsers.JSONParser"],
    # /health/ reports "ok"/"down" for both the database and the cache.
    "ENUM_NAME_OVERRIDES": {"ReachabilityEnum": ["ok", "down"]},
    "SECURITY": [],
    # Applies the views' OpenAPI declarations before the first schema.
    "DEFAULT_GENERATOR_CLASS": "productsite.schema_generator.ProductSchemaGenerator",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "products.openapi.mark_empty_query_values",
        "products.openapi.name_descending_orderings",
        "products.openapi.forbid_unknown_request_fields",
        "products.openapi.request_id_headers",
    ],
}

# Failed authentications (wrong password or token) allowed per window before
# further attempts answer 429: per client address (every username and token
# from it) and per username (from every address). See docs/security.md.
AUTH_FAILURE_RATE_PER_ADDRESS = _rate(
    "AUTH_FAILURE_RATE_PER_ADDRESS", "20/hour", zero_means="0 would refuse every sign-in and token"
)
AUTH_FAILURE_RATE_PER_USERNAME = _rate(
    "AUTH_FAILURE_RATE_PER_USERNAME", "10/hour", zero_means="0 would refuse every sign-in"
)

# --- Request limits -----------------------------------------------------------
DATA_UPLOAD_MAX_MEMORY_SIZE = _at_least(
    "DATA_UPLOAD_MAX_MEMORY_SIZE", env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=1024 * 1024), 1
)

# --- Internationalisation -----------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files (served by the app itself through whitenoise) --------------
STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            # whitenoise's, naming files unhashed until collectstatic has run.
            else "productsite.staticfiles.ManifestStaticFilesStorage"
        ),
    },
}

# --- Behind a proxy -------------------------------------------------------------
# Peers whose X-Forwarded-For is believed (addresses, networks, or "*"), for
# the client address the throttles and failed-login limits count against
# (products.addresses). Same name and meaning as gunicorn's setting, which
# gunicorn.conf.py reads from the same variable. Loopback by default: gunicorn
# binds to 127.0.0.1, so only a proxy on this host can reach it.
FORWARDED_ALLOW_IPS = _forwarded_allow_ips()

if env.bool("USE_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = env.bool("USE_X_FORWARDED_HOST", default=False)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# A load balancer probes /health/ over plain HTTP on the private network; a
# redirect to https would read as "unhealthy".
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_HSTS_SECONDS = _at_least("SECURE_HSTS_SECONDS", env.int("SECURE_HSTS_SECONDS", default=0), 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Metrics ------------------------------------------------------------------
# Peers (addresses or networks) allowed to read /metrics; everyone else gets 404.
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])
for _entry in METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_entry.strip(), strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_IPS: {_entry!r} is not an IP address or network (e.g. 10.0.0.0/8)."
        ) from None
# Where each process writes its metrics for /metrics to add up (gunicorn.conf.py
# sets one of its own when none is given); created when missing.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _metrics_dir:
    try:
        os.makedirs(_metrics_dir, exist_ok=True)
    except OSError as exc:
        raise ImproperlyConfigured(
            f"PROMETHEUS_MULTIPROC_DIR: {_metrics_dir!r}: cannot create the directory ({exc.strerror or exc})."
        ) from None
    if not os.access(_metrics_dir, os.W_OK | os.X_OK):
        raise ImproperlyConfigured(f"PROMETHEUS_MULTIPROC_DIR: {_metrics_dir!r} is not writable.")

# --- Logging ----------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(
        f"LOG_LEVEL: {LOG_LEVEL!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL."
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "filters": {
        "only_with_traceback": {"()": "products.logfields.OnlyWithTraceback"},
        "security_into_request_line": {"()": "products.logfields.SecurityEventIntoRequestLine"},
        "request_id": {"()": "products.logfields.RequestIdOnEveryLine"},
    },
    "handlers": {
        # A client's suspicious request (a wrong Host header, too many fields,
        # a CSRF failure) is the client's doing: Django would log it on a line
        # of its own, mostly at ERROR with a traceback, so anyone could fill
        # the log at will. Its reason goes into the request's one line instead.
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["security_into_request_line", "request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # Propagates to the root's console handler (one handler, no duplicates).
        "products": {"level": LOG_LEVEL},
        # products.requests logs every request once; django.request would add
        # a line per 4xx and 5xx saying the same. Unhandled exceptions (500,
        # with their traceback) still come through.
        "django.request": {"level": "ERROR", "filters": ["only_with_traceback"]},
    },
}
