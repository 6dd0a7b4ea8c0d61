"""Which Redis the service uses, read from the environment: one server, Sentinel or Cluster.

Exactly one of:

* ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``; ``rediss://`` for TLS);
* ``REDIS_SENTINELS=host:port,...`` with ``REDIS_SENTINEL_MASTER=name``
  (optional ``REDIS_SENTINEL_PASSWORD``, and ``REDIS_SENTINEL_USERNAME`` for an
  ACL user);
* ``REDIS_CLUSTER_NODES=host:port,...`` (any subset of the cluster's nodes).

Beside Sentinel or Cluster, ``REDIS_URL`` may still be given for what those
lists cannot say: ``rediss://`` (TLS) and its ``ssl_*`` parameters (a
private CA, a client certificate), the username and password of the data
nodes, and (Sentinel only) the database number, without a host
(``rediss://:password@/3?ssl_ca_certs=/etc/redis/ca.pem``). A host there
names a second Redis: two at once, an error. The sentinels themselves are
reached as the data nodes are (TLS or not) unless ``REDIS_SENTINEL_TLS``
says otherwise.

Bad values never raise here: settings.py must import so that ``manage.py
check`` can report them. They are collected as :class:`Problem` (plain data)
and ``products.checks`` turns each into a system-check error with its id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

DEFAULT_URL = "redis://127.0.0.1:6379/0"
# Where a configuration with problems points the cache: no such directory, so
# every connection fails at once (ENOENT), and no server is ever reached.
MISCONFIGURED_SOCKET_DIR = "/nonexistent-redis-configuration-error"

SINGLE, SENTINEL, CLUSTER = "single", "sentinel", "cluster"

# The TLS parameters REDIS_URL may carry, on every topology: the ones redis-py
# takes in a URL and its cluster client passes on to each node's connection.
TLS_PARAMETERS = (
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)
_FILE_PARAMETERS = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")
_CERT_REQS = ("none", "optional", "required")  # as redis-py spells them
# What redis-py reads without doubt in a URL (it takes any other word for yes).
_URL_BOOLEANS = ("1", "T", "TRUE", "Y", "YES", "0", "F", "FALSE", "N", "NO")
# What django-environ reads as a boolean (settings.py's other switches).
_TRUE, _FALSE = ("1", "true", "yes", "on", "y"), ("0", "false", "no", "off", "n", "")

# host:port, host a name, IPv4 or [IPv6]; the port 1..65535.
_HOST_PORT = re.compile(r"^(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True)
class Problem:
    """One configuration mistake; products.checks reports it as an Error with ``id``."""

    id: str
    msg: str
    hint: str


@dataclass(frozen=True)
class RedisTopology:
    kind: str  # SINGLE, SENTINEL or CLUSTER
    url: str  # REDIS_URL (for SENTINEL/CLUSTER: scheme, credentials, db only)
    nodes: tuple[tuple[str, int], ...] = ()  # the sentinels, or the cluster's startup nodes
    master: str = ""  # the Sentinel service name
    sentinel_username: str = ""  # an ACL user on the sentinels (REDIS_SENTINEL_USERNAME)
    sentinel_password: str = field(default="", repr=False)
    sentinel_tls: bool = False  # the sentinels' own connections (REDIS_SENTINEL_TLS)
    problems: tuple[Problem, ...] = ()

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "rediss"

    @property
    def tls_options(self) -> dict:
        """The URL's ``ssl_*`` parameters as redis-py's keyword arguments (parsed as redis-py parses them)."""
        return tls_options(self.url)

    def describe(self) -> str:
        """Say where Redis is expected, without any password (for messages)."""
        nodes = ",".join(f"{h}:{p}" for h, p in self.nodes)
        if self.kind == SENTINEL:
            return f"Sentinel master {self.master!r} via {nodes} (REDIS_SENTINELS)"
        if self.kind == CLUSTER:
            return f"Redis Cluster via {nodes} (REDIS_CLUSTER_NODES)"
        parts = urlsplit(self.url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return f"{parts.scheme}://{netloc}{parts.path} (REDIS_URL)"


def read_topology(environ: Mapping[str, str]) -> RedisTopology:
    """Read the Redis variables from ``environ``; mistakes go into ``problems``."""
    url = environ.get("REDIS_URL", "").strip()
    problems: list[Problem] = _url_problems(url or DEFAULT_URL)
    if problems:
        url = ""  # the checks below read it: unparseable, it says no more than E024 does
    sentinels = environ.get("REDIS_SENTINELS")
    cluster = environ.get("REDIS_CLUSTER_NODES")
    master = environ.get("REDIS_SENTINEL_MASTER", "").strip()
    if url:
        beside = "REDIS_SENTINELS" if sentinels is not None else "REDIS_CLUSTER_NODES" if cluster else ""
        # TLS sentinels in front of plain data nodes take their CA from the query too.
        sentinels_tls = sentinels is not None and _sentinel_tls(environ.get("REDIS_SENTINEL_TLS"), url)[0]
        problems += _tls_problems(url, beside, sentinels_tls)
    if sentinels is not None and cluster is not None:
        # Nothing else is worth saying until one of them goes.
        problems.append(
            Problem(
                "products.E020",
                "REDIS_SENTINELS and REDIS_CLUSTER_NODES are both set.",
                "Set exactly one: Sentinel (REDIS_SENTINELS + REDIS_SENTINEL_MASTER), "
                "Redis Cluster (REDIS_CLUSTER_NODES), or one server (REDIS_URL).",
            )
        )
        return RedisTopology(kind=SINGLE, url=url or DEFAULT_URL, problems=tuple(problems))

    sentinel_tls = False
    if sentinels is not None:
        nodes, node_problems = _parse_nodes("REDIS_SENTINELS", sentinels)
        problems += node_problems
        if not master:
            problems.append(
                Problem(
                    "products.E023",
                    "REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not.",
                    "Set REDIS_SENTINEL_MASTER to the master's name in the sentinels' "
                    "configuration (sentinel monitor <name> ...), e.g. mymaster.",
                )
            )
        if url and _names_a_server(url):
            problems.append(
                Problem(
                    "products.E027",
                    "REDIS_URL names a server beside REDIS_SENTINELS: two Redis configurations at once "
                    "(the sentinels name the master).",
                    "Set exactly one. For the data nodes' password, database or TLS, give REDIS_URL "
                    "without a host: redis://:password@/db (rediss:// for TLS).",
                )
            )
        kind = SENTINEL
        sentinel_tls, tls_problem = _sentinel_tls(environ.get("REDIS_SENTINEL_TLS"), url)
        problems += tls_problem
    elif cluster is not None:
        nodes, node_problems = _parse_nodes("REDIS_CLUSTER_NODES", cluster)
        problems += node_problems
        if url and _db_number(url) not in (None, 0):
            problems.append(
                Problem(
                    "products.E025",
                    f"REDIS_URL names database {_db_number(url)}, but Redis Cluster has only database 0.",
                    "Beside REDIS_CLUSTER_NODES, REDIS_URL carries only the scheme and credentials: "
                    "drop the database number (or use /0).",
                )
            )
        if url and _names_a_server(url):
            problems.append(
                Problem(
                    "products.E026",
                    "REDIS_URL names a server beside REDIS_CLUSTER_NODES: two Redis configurations at once.",
                    "Set exactly one. For the cluster's password or TLS, give REDIS_URL without a host: "
                    "redis://:password@ (rediss:// for TLS).",
                )
            )
        kind = CLUSTER
    else:
        nodes = ()
        kind = SINGLE
        if url and not problems and urlsplit(url).scheme != "unix" and not urlsplit(url).hostname:
            # redis-py would quietly connect to localhost:6379.
            problems.append(
                Problem(
                    "products.E024",
                    "REDIS_URL names no server (a URL without a host is for beside "
                    "REDIS_SENTINELS or REDIS_CLUSTER_NODES).",
                    "Use redis://[:password@]host:port/db (rediss:// for TLS), e.g. " + DEFAULT_URL + ".",
                )
            )
    if sentinels is None and (
        master
        or environ.get("REDIS_SENTINEL_USERNAME")
        or environ.get("REDIS_SENTINEL_PASSWORD")
        or "REDIS_SENTINEL_TLS" in environ
    ):
        # Beside one server or a cluster: someone meant Sentinel, or forgot these.
        problems.append(
            Problem(
                "products.E023",
                "REDIS_SENTINEL_MASTER, REDIS_SENTINEL_USERNAME, REDIS_SENTINEL_PASSWORD or "
                "REDIS_SENTINEL_TLS is set but REDIS_SENTINELS is not.",
                "Set REDIS_SENTINELS=host:port,... to use Sentinel, or unset the Sentinel variables.",
            )
        )
    return RedisTopology(
        kind=kind,
        url=url or DEFAULT_URL,
        nodes=tuple(nodes),
        master=master,
        sentinel_username=environ.get("REDIS_SENTINEL_USERNAME", ""),
        sentinel_password=environ.get("REDIS_SENTINEL_PASSWORD", ""),
        sentinel_tls=sentinel_tls,
        problems=tuple(problems),
    )


def _names_a_server(url: str) -> bool:
    parts = urlsplit(url)
    try:
        return parts.scheme == "unix" or bool(parts.hostname) or parts.port is not None
    except ValueError:
        return True  # a bad port: E024 says so


def _parse_nodes(variable: str, value: str) -> tuple[list[tuple[str, int]], list[Problem]]:
    entries = [part.strip() for part in value.split(",")]
    if not any(entries):
        return [], [
            Problem(
                "products.E021",
                f"{variable} is set but lists no node.",
                f"Give {variable}=host:port,host:port,... or unset it.",
            )
        ]
    nodes, problems = [], []
    for position, entry in enumerate(entries, start=1):
        match = _HOST_PORT.match(entry)
        port = int(match["port"]) if match else 0
        if not match or not 1 <= port <= 65535:
            problems.append(
                Problem(
                    "products.E022",
                    f"{variable}: entry {position} ({entry!r}) is not host:port.",
                    "Write each node as host:port (IPv6 as [addr]:port), separated by commas, "
                    "with a port from 1 to 65535.",
                )
            )
            continue
        nodes.append((match["ip6"] or match["host"], port))
    return nodes, problems


def _db_number(url: str) -> int | None:
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else None


def _url_problems(url: str) -> list[Problem]:
    try:
        parts = urlsplit(url)  # raises ValueError for "redis://[::1/0"
        parts.port  # noqa: B018  (raises ValueError for a bad port)
        bad = False
    except ValueError:
        bad = True
    if not bad:
        # unix:///path/redis.sock?db=N: the path is the socket's.
        path = "" if parts.scheme == "unix" else parts.path.strip("/")
        db = parse_qs(parts.query).get("db", ["0"])  # redis-py reads ?db= too, and fails on a bad one
        bad = (
            parts.scheme not in ("redis", "rediss", "unix")
            or (path and not path.isdigit())
            or not all(value.isascii() and value.isdigit() for value in db)
            or (parts.scheme == "unix" and not parts.path)
        )
    if bad:
        return [
            Problem(
                "products.E024",
                "REDIS_URL is not a Redis URL.",
                "Use redis://[:password@]host:port/db (rediss:// for TLS), e.g. " + DEFAULT_URL + ".",
            )
        ]
    return []


def _tls_problems(url: str, beside: str, sentinels_tls: bool = False) -> list[Problem]:
    """Say what in REDIS_URL's query would be dropped or refused at the first connection."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    problems = []
    twice = [name for name, values in query.items() if len(values) > 1]
    if twice:
        # redis-py takes the first value, a list the last: say which is meant.
        problems.append(
            Problem("products.E028", f"REDIS_URL gives {', '.join(twice)} more than once.", "Give each once.")
        )
    ssl = [name for name in query if name.startswith("ssl_")]
    if ssl and parts.scheme != "rediss" and not sentinels_tls:
        problems.append(
            Problem(
                "products.E028",
                f"REDIS_URL has TLS parameters ({', '.join(ssl)}) but is not a rediss:// URL.",
                "Use rediss:// to connect with TLS (REDIS_SENTINEL_TLS=1 for TLS sentinels only), "
                "or drop the ssl_* parameters.",
            )
        )
    if beside:
        # Anything else there would be dropped without a word.
        unknown = [name for name in query if name not in TLS_PARAMETERS]
        hint = f"Beside {beside}, REDIS_URL's query carries TLS settings only: {', '.join(TLS_PARAMETERS)}."
    else:
        # redis-py passes every parameter on to the connection, which refuses
        # one it does not know on every connect (a TypeError: every request a 500).
        # (Checked as rediss:// when the ssl_* ones were just refused for want of it.)
        known = _url_parameters("rediss" if ssl else parts.scheme)
        unknown = [name for name in query if name not in known]
        hint = "Use the names redis-py takes in a URL (db, socket_timeout, ssl_ca_certs, ...), in lower case."
    if unknown:
        problems.append(
            Problem("products.E028", f"REDIS_URL: unknown or unused parameter {', '.join(unknown)}.", hint)
        )
    for name in TLS_PARAMETERS:
        value = query.get(name, [None])[0]
        if value is None:
            continue
        path = Path(value)
        if name == "ssl_cert_reqs" and value not in _CERT_REQS:
            wrong, hint = (
                f"ssl_cert_reqs={value!r} is not one of {', '.join(_CERT_REQS)}",
                "Spell it in lower case.",
            )
        elif name == "ssl_check_hostname" and value.upper() not in _URL_BOOLEANS:
            booleans = ", ".join(_URL_BOOLEANS).lower()
            wrong, hint = f"ssl_check_hostname={value!r} is not one of {booleans}", "Use yes or no."
        elif name == "ssl_ca_path" and not path.is_dir():
            wrong, hint = (
                f"ssl_ca_path: there is no directory {value!r}",
                "Give the CA directory's absolute path.",
            )
        elif name in _FILE_PARAMETERS and name != "ssl_ca_path" and not path.is_file():
            wrong = f"{name}: there is no file {value!r}"
            hint = "Give the file's absolute path, e.g. rediss://host:6380/0?ssl_ca_certs=/etc/redis/ca.pem."
        else:
            continue
        problems.append(Problem("products.E028", f"REDIS_URL: {wrong}.", hint))
    return problems


def _url_parameters(scheme: str) -> set[str]:
    """The names redis-py takes in a URL's query for ``scheme``: its parsers', its pool's, its connection's."""
    import inspect

    from redis.connection import (
        URL_QUERY_ARGUMENT_PARSERS,
        Connection,
        ConnectionPool,
        SSLConnection,
        UnixDomainSocketConnection,
    )

    connection = {"rediss": SSLConnection, "unix": UnixDomainSocketConnection}.get(scheme, Connection)
    names = set(URL_QUERY_ARGUMENT_PARSERS)
    for cls in (ConnectionPool, *connection.__mro__):
        init = cls.__dict__.get("__init__")
        if init is not None:
            names.update(
                name
                for name, parameter in inspect.signature(init).parameters.items()
                if name != "self"
                and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
            )
    return names


def _sentinel_tls(value: str | None, url: str) -> tuple[bool, list[Problem]]:
    data_nodes = urlsplit(url or DEFAULT_URL).scheme == "rediss"
    if value is None:
        return data_nodes, []
    if value.strip().lower() in _TRUE:
        return True, []
    if value.strip().lower() in _FALSE:
        return False, []
    return data_nodes, [
        Problem(
            "products.E029",
            f"REDIS_SENTINEL_TLS={value!r} is not a yes or no.",
            "Set REDIS_SENTINEL_TLS=1 when the sentinels listen with TLS, 0 when they do not; "
            "unset, they are reached as REDIS_URL reaches the data nodes (rediss://: TLS).",
        )
    ]


def tls_options(url: str) -> dict:
    """Return REDIS_URL's ``ssl_*`` parameters as keyword arguments for redis-py's connections."""
    from redis.connection import FALSE_STRINGS

    query = parse_qs(urlsplit(url).query)
    options: dict = {}
    for name in TLS_PARAMETERS:
        if name in query:
            value = query[name][0]  # as redis-py's parse_url (a repeat is E028)
            options[name] = value.upper() not in FALSE_STRINGS if name == "ssl_check_hostname" else value
    return options


def _tls_query(url: str) -> str:
    """The URL's TLS parameters as a query string to carry over (``""`` when none)."""
    query = parse_qs(urlsplit(url).query)
    kept = [(name, query[name][0]) for name in TLS_PARAMETERS if name in query]
    return "?" + urlencode(kept) if kept else ""


# --- CACHES['default'] for django-redis ---------------------------------------


def cache_settings(
    topology: RedisTopology,
    *,
    key_prefix: str,
    timeout: int,
    socket_timeout: float,
    max_connections: int,
) -> dict:
    """Return ``CACHES['default']`` for the topology (django-redis in every case).

    A topology with problems still gets a configuration so that settings
    import and ``manage.py check`` can say what is wrong; productsite.wsgi
    refuses to serve it. That configuration is a Unix socket that cannot
    exist (named after the problems), never a real server: a process that
    runs no system checks (``manage.py shell``) must not read or invalidate
    on whatever answers at the default URL, another deployment's Redis. Its
    reads go to the database and its writes' invalidations to the outbox, as
    during any outage, and its log names the problem.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.driver_info import DriverInfo
    from redis.retry import Retry

    options: dict = {
        "SOCKET_CONNECT_TIMEOUT": socket_timeout,
        "SOCKET_TIMEOUT": socket_timeout,
        # No retries: products.cache decides what a failure means (circuit
        # breaker), so one failure must cost one timeout.
        "CONNECTION_POOL_KWARGS": {
            "retry": Retry(NoBackoff(), 0),
            "max_connections": max_connections,
            # The version CLIENT SETINFO reports, given: redis-py otherwise
            # looks itself up with importlib.metadata on every new connection
            # (a scan of sys.path, and private memory in every forked worker).
            "driver_info": DriverInfo(lib_version=redis.__version__),
        },
    }
    config = {
        "BACKEND": "django_redis.cache.RedisCache",
        "KEY_PREFIX": key_prefix,
        "TIMEOUT": timeout,
        "OPTIONS": options,
    }
    if topology.problems or topology.kind == SINGLE:
        options["CLIENT_CLASS"] = "django_redis.client.DefaultClient"
        config["LOCATION"] = _misconfigured_location(topology) if topology.problems else topology.url
    elif topology.kind == SENTINEL:
        config["LOCATION"] = [_sentinel_location(topology)]
        options.update(
            CLIENT_CLASS="django_redis.client.SentinelClient",
            CONNECTION_FACTORY="django_redis.pool.SentinelConnectionFactory",
            SENTINELS=list(topology.nodes),
            SENTINEL_KWARGS=_sentinel_kwargs(topology, socket_timeout),
        )
        if topology.tls:
            # SentinelConnectionPool.from_url would otherwise take rediss://
            # to mean a plain SSLConnection to the *service name* as a host.
            from redis.sentinel import SentinelManagedSSLConnection

            options["CONNECTION_POOL_KWARGS"]["connection_class"] = SentinelManagedSSLConnection
    else:
        host, port = topology.nodes[0]
        config["LOCATION"] = [_node_url(topology.url, host, port)]
        options.update(
            CLIENT_CLASS="productsite.redis_cluster.ClusterClient",
            CONNECTION_FACTORY="productsite.redis_cluster.ClusterConnectionFactory",
            CLUSTER_NODES=list(topology.nodes),
        )
    return config


def _misconfigured_location(topology: RedisTopology) -> str:
    ids = "-".join(sorted({problem.id for problem in topology.problems}))
    return f"unix://{MISCONFIGURED_SOCKET_DIR}/redis-configuration-error-{ids}-see-manage.py-check.sock"


def _credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return ""
    user = quote(unquote(parts.username or ""), safe="")
    password = quote(unquote(parts.password or ""), safe="")
    return f"{user}:{password}@" if password else f"{user}@"


def _sentinel_location(topology: RedisTopology) -> str:
    # django-redis's SentinelConnectionFactory reads the service name from
    # the URL's host. One URL only, the master's: the SentinelClient would
    # otherwise read from a replica, whose lag could return a value that an
    # invalidation has already deleted on the master.
    scheme = "rediss" if topology.tls else "redis"
    location = f"{scheme}://{_credentials(topology.url)}{topology.master}/{_db_number(topology.url) or 0}"
    # The data connections' CA and certificate (plain data nodes behind TLS sentinels take none).
    return location + (_tls_query(topology.url) if topology.tls else "")


def _sentinel_kwargs(topology: RedisTopology, socket_timeout: float) -> dict:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # The sentinels get the data connections' bounds: redis-py's default
    # retries with back-off made one request wait 3-5 s when no sentinel answered.
    kwargs: dict = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if topology.sentinel_username:
        kwargs["username"] = topology.sentinel_username
    if topology.sentinel_password:
        kwargs["password"] = topology.sentinel_password
    if topology.sentinel_tls:
        # The same CA and client certificate as the data nodes.
        kwargs.update(ssl=True, **topology.tls_options)
    return kwargs


def _node_url(url: str, host: str, port: int) -> str:
    scheme = "rediss" if urlsplit(url).scheme == "rediss" else "redis"
    netloc = f"[{host}]" if ":" in host else host
    return f"{scheme}://{_credentials(url)}{netloc}:{port}/0{_tls_query(url)}"


def exit_on_problems(topology: RedisTopology) -> None:
    """Refuse to serve a bad Redis configuration: print each problem with its id, exit 4.

    gunicorn runs no system checks; exit status 4 makes its arbiter stop with
    "App failed to load" instead of serving with a cache it was not told to use.
    """
    import sys

    if not topology.problems:
        return
    for problem in topology.problems:
        print(f"{problem.id}: {problem.msg}\n\tHINT: {problem.hint}", file=sys.stderr)
    raise SystemExit(4)
