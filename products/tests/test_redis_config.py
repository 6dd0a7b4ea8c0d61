"""Which Redis to use comes from the environment; a mistake is a system check error with an id."""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal

import pytest
from redis.connection import parse_url
from redis.sentinel import SentinelManagedSSLConnection

from products import cache
from products.checks import check_redis_topology
from products.models import Product
from productsite import redis_config

from .support.cache_state import reset_process_state
from .support.processes import BASE_DIR, free_port, server_env

# Every server and command here gets a database of its own (or none): the
# PostgreSQL pass of scripts/test.sh leaves these tests to the SQLite pass.
pytestmark = pytest.mark.database_independent

MALFORMED = [
    ({"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_CLUSTER_NODES": "127.0.0.1:7000"}, "products.E020"),
    ({"REDIS_CLUSTER_NODES": ""}, "products.E021"),
    ({"REDIS_CLUSTER_NODES": " , ,"}, "products.E021"),
    ({"REDIS_SENTINELS": "", "REDIS_SENTINEL_MASTER": "mymaster"}, "products.E021"),
    ({"REDIS_CLUSTER_NODES": "127.0.0.1:7000,127.0.0.1"}, "products.E022"),
    ({"REDIS_CLUSTER_NODES": "127.0.0.1:70000"}, "products.E022"),
    ({"REDIS_CLUSTER_NODES": "127.0.0.1:port"}, "products.E022"),
    ({"REDIS_SENTINELS": "redis://127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "m"}, "products.E022"),
    ({"REDIS_SENTINELS": "::1:26379", "REDIS_SENTINEL_MASTER": "m"}, "products.E022"),
    ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "products.E023"),
    ({"REDIS_SENTINEL_MASTER": "mymaster"}, "products.E023"),
    ({"REDIS_CLUSTER_NODES": "127.0.0.1:7000", "REDIS_SENTINEL_MASTER": "mymaster"}, "products.E023"),
    ({"REDIS_CLUSTER_NODES": "127.0.0.1:7000", "REDIS_SENTINEL_PASSWORD": "secret"}, "products.E023"),
    ({"REDIS_SENTINEL_USERNAME": "catalogue"}, "products.E023"),
    ({"REDIS_URL": "http://127.0.0.1:6379/0"}, "products.E024"),
    ({"REDIS_URL": "redis://127.0.0.1:6379/zero"}, "products.E024"),
    ({"REDIS_URL": "redis://127.0.0.1:99999/0"}, "products.E024"),
    ({"REDIS_URL": "redis://:pw@/3"}, "products.E024"),  # no host: redis-py would use localhost
    ({"REDIS_URL": "redis://:6379/5"}, "products.E024"),  # a port, still no host
    ({"REDIS_URL": "redis://[::1/0"}, "products.E024"),  # urlsplit raises: was a traceback
    ({"REDIS_CLUSTER_NODES": "127.0.0.1:7000", "REDIS_URL": "redis://[::1/0"}, "products.E024"),
    ({"REDIS_URL": "unix:///tmp/x.sock?db=abc"}, "products.E024"),  # every request was a 500
    ({"REDIS_URL": "redis://127.0.0.1:6379/0?db=abc"}, "products.E024"),
    ({"REDIS_URL": "unix://"}, "products.E024"),  # no socket
    ({"REDIS_CLUSTER_NODES": "127.0.0.1:7000", "REDIS_URL": "unix:///tmp/x.sock"}, "products.E026"),
    ({"REDIS_CLUSTER_NODES": "127.0.0.1:7000", "REDIS_URL": "redis://:pw@/3"}, "products.E025"),
    # Two at once: a server in REDIS_URL beside a cluster.
    ({"REDIS_CLUSTER_NODES": "127.0.0.1:7000", "REDIS_URL": "redis://127.0.0.1:6379/0"}, "products.E026"),
    ({"REDIS_CLUSTER_NODES": "127.0.0.1:7000", "REDIS_URL": "redis://:pw@ignored:1/0"}, "products.E026"),
    # TLS parameters that redis-py would refuse at every connection, or that would be dropped.
    ({"REDIS_URL": f"redis://127.0.0.1:6379/0?ssl_ca_certs={__file__}"}, "products.E028"),  # not rediss://
    ({"REDIS_URL": f"rediss://127.0.0.1:6379/0?ssl_ca_cert={__file__}"}, "products.E028"),  # a typo
    ({"REDIS_URL": "rediss://127.0.0.1:6379/0?ssl_ca_certs=/no/such/ca.pem"}, "products.E028"),
    (
        {"REDIS_URL": "rediss://127.0.0.1:6379/0?ssl_cert_reqs=REQUIRED"},
        "products.E028",
    ),  # redis-py's spelling
    ({"REDIS_URL": "rediss://127.0.0.1:6379/0?ssl_check_hostname=off"}, "products.E028"),  # redis-py: yes
    # Names redis-py's connection refuses on every connect (a TypeError: every request was a 500).
    ({"REDIS_URL": f"rediss://127.0.0.1:6379/0?SSL_CA_CERTS={__file__}"}, "products.E028"),
    ({"REDIS_URL": f"rediss://127.0.0.1:6379/0?ssl-ca-certs={__file__}"}, "products.E028"),
    ({"REDIS_URL": "redis://127.0.0.1:6379/0?sockettimeout=1"}, "products.E028"),
    # redis-py reads the first of a repeated parameter: refused, whichever was meant.
    ({"REDIS_URL": "rediss://127.0.0.1:6379/0?ssl_cert_reqs=none&ssl_cert_reqs=required"}, "products.E028"),
    ({"REDIS_URL": "rediss://127.0.0.1:6379/0?ssl_ca_certs=/"}, "products.E028"),  # a directory, not a file
    (
        {"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "redis:///?db=3"},
        "products.E028",
    ),
    ({"REDIS_CLUSTER_NODES": "127.0.0.1:7000", "REDIS_URL": "rediss://?socket_timeout=5"}, "products.E028"),
    (
        {"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "m", "REDIS_SENTINEL_TLS": "maybe"},
        "products.E029",
    ),
    ({"REDIS_SENTINEL_TLS": "1"}, "products.E023"),
]


@pytest.mark.parametrize(("environ", "check_id"), MALFORMED, ids=[c for _, c in MALFORMED])
def test_each_mistake_is_a_check_error_with_its_id(environ, check_id, settings):
    settings.REDIS_TOPOLOGY = redis_config.read_topology(environ)
    errors = check_redis_topology(None)
    assert [e.id for e in errors] == [check_id], [(e.id, e.msg) for e in errors]
    assert errors[0].hint


VALID = [
    ({}, redis_config.SINGLE, ()),
    ({"REDIS_URL": "rediss://:secret@cache.example.com:6380/2"}, redis_config.SINGLE, ()),
    ({"REDIS_URL": "unix:///var/run/redis/redis.sock?db=2"}, redis_config.SINGLE, ()),
    (
        {"REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380", "REDIS_SENTINEL_MASTER": "mymaster"},
        redis_config.SENTINEL,
        (("10.0.0.1", 26379), ("::1", 26380)),
    ),
    (
        {"REDIS_CLUSTER_NODES": "node-1.internal:7000", "REDIS_URL": "rediss://:pw@"},
        redis_config.CLUSTER,
        (("node-1.internal", 7000),),
    ),
    (
        {
            "REDIS_SENTINELS": "10.0.0.1:26379",
            "REDIS_SENTINEL_MASTER": "mymaster",
            "REDIS_SENTINEL_TLS": "no",
            "REDIS_URL": f"rediss://:pw@/2?ssl_ca_certs={__file__}&ssl_check_hostname=no&ssl_cert_reqs=required",
        },
        redis_config.SENTINEL,
        (("10.0.0.1", 26379),),
    ),
    (  # TLS sentinels (with a private CA) in front of plain data nodes
        {
            "REDIS_SENTINELS": "10.0.0.1:26379",
            "REDIS_SENTINEL_MASTER": "mymaster",
            "REDIS_SENTINEL_TLS": "1",
            "REDIS_URL": f"redis://:pw@/2?ssl_ca_certs={__file__}",
        },
        redis_config.SENTINEL,
        (("10.0.0.1", 26379),),
    ),
    (
        {
            "REDIS_URL": "redis://127.0.0.1:6379/0?socket_keepalive=yes&health_check_interval=5&client_name=web"
        },
        redis_config.SINGLE,
        (),
    ),
]


@pytest.mark.parametrize(("environ", "kind", "nodes"), VALID)
def test_valid_configurations_pass_the_check(environ, kind, nodes, settings):
    topology = redis_config.read_topology(environ)
    settings.REDIS_TOPOLOGY = topology
    assert check_redis_topology(None) == []
    assert (topology.kind, topology.nodes) == (kind, nodes)


def test_a_server_in_redis_url_beside_sentinel_is_two_configurations_at_once(settings):
    # Issue 11 lets REDIS_URL carry the database and password beside Sentinel;
    # a host there is a second configuration (SPEC: "two at once ... is a clear
    # startup error"), as beside REDIS_CLUSTER_NODES (E026).
    environ = {"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "m"}
    settings.REDIS_TOPOLOGY = redis_config.read_topology(
        {**environ, "REDIS_URL": "redis://:pw@127.0.0.1:6379/3"}
    )
    assert [(type(m).__name__, m.id) for m in check_redis_topology(None)] == [("Error", "products.E027")]
    settings.REDIS_TOPOLOGY = redis_config.read_topology({**environ, "REDIS_URL": "redis://:pw@/3"})
    assert check_redis_topology(None) == []
    assert redis_config.cache_settings(
        settings.REDIS_TOPOLOGY, key_prefix="p", timeout=60, socket_timeout=0.1, max_connections=8
    )["LOCATION"] == ["redis://:pw@m/3"]


def _cache(environ: dict) -> dict:
    return redis_config.cache_settings(
        redis_config.read_topology(environ), key_prefix="p", timeout=60, socket_timeout=0.1, max_connections=8
    )


def test_sentinel_uses_django_redis_sentinel_client_on_the_master_only():
    config = _cache(
        {
            "REDIS_SENTINELS": "127.0.0.1:26379,127.0.0.1:26380",
            "REDIS_SENTINEL_MASTER": "mymaster",
            "REDIS_SENTINEL_PASSWORD": "s3",
            "REDIS_URL": "redis://:data-pw@/4",
        }
    )
    options = config["OPTIONS"]
    assert options["CLIENT_CLASS"] == "django_redis.client.SentinelClient"
    assert options["CONNECTION_FACTORY"] == "django_redis.pool.SentinelConnectionFactory"
    assert options["SENTINELS"] == [("127.0.0.1", 26379), ("127.0.0.1", 26380)]
    sentinel_kwargs = dict(options["SENTINEL_KWARGS"])
    assert sentinel_kwargs.pop("retry").get_retries() == 0
    assert sentinel_kwargs == {"socket_timeout": 0.1, "socket_connect_timeout": 0.1, "password": "s3"}
    # One URL: the master's (a replica could lag behind an invalidation), with REDIS_URL's db and password.
    assert config["LOCATION"] == ["redis://:data-pw@mymaster/4"]
    assert options["CONNECTION_POOL_KWARGS"]["retry"].get_retries() == 0


def test_sentinel_over_tls_uses_sentinel_managed_ssl_connections():
    config = _cache({"REDIS_SENTINELS": "h:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "rediss:///0"})
    assert config["LOCATION"] == ["rediss://m/0"]
    assert config["OPTIONS"]["CONNECTION_POOL_KWARGS"]["connection_class"] is SentinelManagedSSLConnection
    assert config["OPTIONS"]["SENTINEL_KWARGS"]["ssl"] is True


def test_redis_url_tls_files_reach_the_data_nodes_and_the_sentinels():
    query = f"ssl_ca_certs={__file__}&ssl_certfile={__file__}&ssl_keyfile={__file__}&ssl_check_hostname=no"
    environ = {"REDIS_SENTINELS": "h:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": f"rediss:///0?{query}"}
    config = _cache(environ)
    (location,) = config["LOCATION"]
    assert location.startswith("rediss://m/0?")
    # redis-py reads the data connections' TLS files from the URL, as for one server.
    parsed = parse_url(location)
    assert (parsed["ssl_ca_certs"], parsed["ssl_certfile"], parsed["ssl_keyfile"]) == (__file__,) * 3
    assert parsed["ssl_check_hostname"] is False
    sentinel_kwargs = config["OPTIONS"]["SENTINEL_KWARGS"]
    assert sentinel_kwargs["ssl"] is True
    assert (sentinel_kwargs["ssl_ca_certs"], sentinel_kwargs["ssl_certfile"]) == (__file__, __file__)
    assert sentinel_kwargs["ssl_check_hostname"] is False
    # Plain sentinels in front of TLS data nodes: the data connections keep TLS.
    config = _cache({**environ, "REDIS_SENTINEL_TLS": "0"})
    assert not any(key.startswith("ssl") for key in config["OPTIONS"]["SENTINEL_KWARGS"])
    assert config["OPTIONS"]["CONNECTION_POOL_KWARGS"]["connection_class"] is SentinelManagedSSLConnection
    # TLS sentinels in front of plain data nodes: the CA goes to the sentinels only.
    config = _cache(
        {**environ, "REDIS_SENTINEL_TLS": "1", "REDIS_URL": f"redis:///0?ssl_ca_certs={__file__}"}
    )
    assert config["LOCATION"] == ["redis://m/0"]
    assert config["OPTIONS"]["SENTINEL_KWARGS"]["ssl_ca_certs"] == __file__
    # The cluster's nodes get them too (redis_cluster.ClusterConnectionFactory reads the URL).
    config = _cache({"REDIS_CLUSTER_NODES": "h:7000", "REDIS_URL": f"rediss://?{query}"})
    assert parse_url(config["LOCATION"][0])["ssl_keyfile"] == __file__


def test_cluster_uses_the_cluster_client():
    config = _cache({"REDIS_CLUSTER_NODES": "10.0.0.1:7000,10.0.0.2:7000"})
    assert config["OPTIONS"]["CLIENT_CLASS"] == "productsite.redis_cluster.ClusterClient"
    assert config["OPTIONS"]["CONNECTION_FACTORY"] == "productsite.redis_cluster.ClusterConnectionFactory"
    assert config["OPTIONS"]["CLUSTER_NODES"] == [("10.0.0.1", 7000), ("10.0.0.2", 7000)]
    assert config["LOCATION"] == ["redis://10.0.0.1:7000/0"]


UNREACHABLE = [
    {"REDIS_CLUSTER_NODES": "127.0.0.1:{port}"},
    {"REDIS_SENTINELS": "127.0.0.1:{port},127.0.0.1:{port2}", "REDIS_SENTINEL_MASTER": "nowhere"},
]


@pytest.mark.parametrize("environ", UNREACHABLE, ids=["cluster", "sentinels"])
@pytest.mark.django_db(transaction=True)
def test_an_unreachable_topology_costs_a_database_read_not_an_error(environ, settings, anon_client):
    ports = {"port": free_port(), "port2": free_port()}
    environ = {k: v.format(**ports) for k, v in environ.items()}
    settings.CACHES = {**settings.CACHES, "default": _cache(environ)}
    reset_process_state()
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    reset_process_state()
    started = time.monotonic()
    response = anon_client.get("/api/products/Mug/")
    waited = time.monotonic() - started
    assert response.status_code == 200 and response["X-Cache"] == "MISS"
    # Bounded by the socket timeouts, not by redis-py's retries with back-off.
    assert waited < 1.0, f"a request waited {waited:.2f}s for an unreachable Redis"
    assert cache.status() == "down"
    reset_process_state()


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    environment = server_env(**env)
    environment.pop("REDIS_URL")
    return subprocess.run(
        [sys.executable, *args], cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=60
    )


def test_manage_py_check_names_the_mistake_without_a_traceback():
    result = _run(["manage.py", "check"], REDIS_CLUSTER_NODES="127.0.0.1:7000,127.0.0.1")
    assert result.returncode != 0
    assert "products.E022" in result.stderr and "entry 2 ('127.0.0.1')" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("preload", ["1", "0"])
def test_gunicorn_refuses_to_serve_a_bad_configuration(preload):
    result = _run(
        [
            "-m",
            "gunicorn",
            "productsite.wsgi:application",
            "--bind",
            f"127.0.0.1:{free_port()}",
            "--workers",
            "1",
        ],
        REDIS_SENTINELS="127.0.0.1:26379",
        GUNICORN_PRELOAD=preload,
    )
    assert "products.E023" in result.stderr
    if preload == "1":  # the master loads the app and stops before forking any worker
        assert result.returncode == 4  # gunicorn's "application failed to load"
    else:  # the worker fails to boot, then the master gives up
        assert result.returncode != 0 and "App failed to load" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("first_listed", ["answering", "down"])
def test_a_wrong_sentinel_password_is_one_short_line_that_names_the_settings(
    redis_sentinel, tmp_path, first_listed
):
    from .support.processes import manage

    sentinels = redis_sentinel.env["REDIS_SENTINELS"]
    if first_listed == "down":  # its refused connection must not hide the others' answer
        sentinels = f"127.0.0.1:{free_port()},{sentinels}"
    env = server_env(
        **{**redis_sentinel.env, "REDIS_SENTINELS": sentinels, "REDIS_SENTINEL_PASSWORD": "wrong"},
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        LOG_LEVEL="WARNING",
    )
    assert manage(env, "migrate", "-v", "0").returncode == 0
    # The server's log line (a cache command says it in its CommandError instead).
    result = manage(env, "shell", "-c", "from products import transport; print(transport.status())")
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "down", result.stdout
    assert "Traceback" not in result.stderr
    warning = next(line for line in result.stderr.splitlines() if "Redis unavailable" in line)
    assert "REDIS_SENTINEL_PASSWORD" in warning and "<redis." not in warning, warning
    assert "refused the credentials: AuthenticationError" in warning, warning
    assert len(warning) < 600, warning
    # The command's own error says it in that line too, not in redis-py's
    # repr of every sentinel client (about 4 KB).
    for command in (["product_cache_info"], ["clear_product_cache"], ["warm_product_cache", "--all"]):
        result = manage(env, *command)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        [error] = result.stderr.splitlines()
        assert error.startswith("CommandError: Redis at "), error
        assert "refused the credentials: AuthenticationError" in error and "<redis." not in error, error
        assert len(error) < 800, error


@pytest.mark.slow
def test_sentinels_that_need_an_acl_user_are_reached_as_redis_sentinel_username(redis_sentinel, tmp_path):
    from .support.processes import manage

    user, password = "catalogue", "acl p@ss"  # a password only this user takes
    for sentinel in redis_sentinel.sentinels:
        sentinel.client().execute_command("ACL", "SETUSER", user, "on", f">{password}", "+@all")
    try:
        env = server_env(
            **{**redis_sentinel.env, "REDIS_SENTINEL_PASSWORD": password},
            DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
            LOG_LEVEL="WARNING",
        )
        assert manage(env, "migrate", "-v", "0").returncode == 0
        as_default_user = manage(env, "product_cache_info")
        assert as_default_user.returncode == 1, as_default_user.stdout
        assert "REDIS_SENTINEL_USERNAME" in as_default_user.stderr, as_default_user.stderr

        as_the_user = manage({**env, "REDIS_SENTINEL_USERNAME": user}, "product_cache_info")
        assert as_the_user.returncode == 0, as_the_user.stderr
    finally:
        for sentinel in redis_sentinel.sentinels:
            sentinel.client().execute_command("ACL", "DELUSER", user)


@pytest.mark.slow
def test_a_sentinel_user_without_the_switch_master_channel_is_said_once_and_not_reconnected_in_a_loop(
    redis_sentinel, tmp_path
):
    # Redis 7 gives a new ACL user no channel: SUBSCRIBE +switch-master is
    # refused (NOPERM). The watcher took that for a lost connection and
    # subscribed again every 50 ms, to every sentinel, in silence.
    from .support.processes import manage

    user, password = "no-channels", "n0 channels"
    sentinels = [sentinel.client() for sentinel in redis_sentinel.sentinels]
    for sentinel in sentinels:
        sentinel.execute_command("ACL", "SETUSER", user, "on", f">{password}", "+@all", "resetchannels")
    try:
        env = server_env(
            **{**redis_sentinel.env, "REDIS_SENTINEL_USERNAME": user, "REDIS_SENTINEL_PASSWORD": password},
            DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
            LOG_LEVEL="WARNING",
        )
        assert manage(env, "migrate", "-v", "0").returncode == 0
        accepted = [s.info("stats")["total_connections_received"] for s in sentinels]
        result = manage(
            env,
            "shell",
            "-c",
            "import time; from products import transport; transport.run(lambda c: c.ping()); time.sleep(3)",
        )
        accepted = [s.info("stats")["total_connections_received"] - a for s, a in zip(sentinels, accepted)]
    finally:
        for sentinel in sentinels:
            sentinel.execute_command("ACL", "DELUSER", user)
    assert result.returncode == 0, result.stderr
    refusals = [line for line in result.stderr.splitlines() if "refused the subscription" in line]
    print(f"\nsentinel connections in 3 s: {accepted}; log: {refusals}")
    assert len(refusals) == 1, result.stderr
    assert "+switch-master" in refusals[0] and "REDIS_SENTINEL_USERNAME" in refusals[0], refusals[0]
    assert sum(accepted) <= 15, accepted  # was about 60 per sentinel


@pytest.mark.parametrize(
    "environ, check_id",
    [
        (
            {
                "REDIS_URL": "redis://127.0.0.1:6379/0",
                "REDIS_SENTINELS": "127.0.0.1:26379",
                "REDIS_SENTINEL_MASTER": "m",
            },
            "products.E027",
        ),
        ({"REDIS_CLUSTER_NODES": "127.0.0.1:7000;127.0.0.1:7001"}, "products.E022"),
        ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "products.E023"),
    ],
    ids=["url-beside-sentinels", "malformed-cluster-nodes", "sentinel-without-master"],
)
def test_a_bad_configuration_points_the_cache_at_no_server(environ, check_id):
    # A review: with REDIS_URL beside REDIS_SENTINELS, `manage.py shell` (which
    # runs no system checks) read and invalidated on the default
    # redis://127.0.0.1:6379/0, neither of the servers it was given: another
    # deployment's Redis, written to in silence.
    location = _cache(environ)["LOCATION"]
    assert location.startswith(f"unix://{redis_config.MISCONFIGURED_SOCKET_DIR}/")
    assert check_id in location and location != redis_config.DEFAULT_URL


def test_a_shell_with_a_bad_configuration_reaches_no_server_and_says_why():
    environment = server_env(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        REDIS_SENTINELS="127.0.0.1:26379",
        REDIS_SENTINEL_MASTER="m",
    )
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.conf import settings; from django.core.cache import caches\n"
            "print(settings.CACHES['default']['LOCATION'])\n"
            "try:\n    caches['default'].get('x')\nexcept Exception as exc:\n    print('refused:', exc)",
        ],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    location = result.stdout.splitlines()[-2]
    assert location.startswith("unix:///nonexistent") and "127.0.0.1" not in location
    assert "refused:" in result.stdout and "products.E027" in result.stdout.splitlines()[-1]
