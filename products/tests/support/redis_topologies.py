"""Real Redis topologies for the tests: a Redis Cluster and a Sentinel set, on loopback.

Every process is a ``redis-server`` on a free port with its own temp dir,
started here and stopped by pid; the shared Redis is never touched. The
fixtures are session-scoped, so the suite pays for each topology once
(about 2 s for the cluster, 1 s for Sentinel); a test that kills a node
restarts it before it ends, so the next test finds the topology whole
(with the roles swapped).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from productsite import redis_config

from .processes import free_port
from .redis_server import answering

SENTINEL_MASTER = "products-test"
SENTINEL_DB = 3
# Low enough that a failover takes a few seconds, high enough that a loaded
# test machine does not fail over by itself.
SENTINEL_DOWN_AFTER_MS = 1000
SENTINEL_FAILOVER_TIMEOUT_MS = 4000
CLUSTER_NODE_TIMEOUT_MS = 1000
# A replica that won an election keeps that election's votes. Redis 7.0: if its
# master fails within max(2 x node timeout, 2 s) of that election, the replica
# "wins" again at once with the old epoch, which the other nodes refuse, and the
# slots stay down for good (Valkey fixed it: valkey-io/valkey#1711). After twice
# that, its next election starts afresh.
CLUSTER_ELECTION_RETRY_S = 2 * max(2 * CLUSTER_NODE_TIMEOUT_MS, 2000) / 1000
# Every topology requires passwords, so the credentials path of the
# configuration is exercised too (a space and an @ prove the URL quoting).
DATA_PASSWORD = "data p@ss"
SENTINEL_PASSWORD = "sentinel p@ss"
DATA_URL_CREDENTIALS = ":data%20p%40ss@"  # no host: the lists name the servers


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed; scripts/test.sh installs it (apt-get install redis-server redis-tools)"
        )
    return path


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except redis.RedisError as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def replicas_synced(nodes: list) -> bool:
    """True when every replica among ``nodes`` has finished its sync (a replica that has
    not is refused promotion: "disconnected from master for longer than allowed")."""
    for node in nodes:
        replication = node.client().info("replication")
        if replication["role"] == "slave" and replication.get("master_link_status") != "up":
            return False
    return True


class TLSFiles:
    """A private CA, a certificate for 127.0.0.1 and a client certificate, made with openssl.

    ``other_ca`` signed nothing here: a client that trusts it refuses the servers.
    """

    def __init__(self, root: Path) -> None:
        self.dir = root / "tls"
        self.dir.mkdir()
        self.ca, self.other_ca = self._authority("ca"), self._authority("other-ca")
        self.server_cert, self.server_key = self._signed("server", "subjectAltName=IP:127.0.0.1")
        self.client_cert, self.client_key = self._signed("client", "extendedKeyUsage=clientAuth")

    def _openssl(self, *args: str) -> None:
        subprocess.run([_binary("openssl"), *args], check=True, capture_output=True, cwd=self.dir, timeout=30)

    def _authority(self, name: str) -> Path:
        self._openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN=products test {name}",
        )  # fmt: skip
        return self.dir / f"{name}.crt"

    def _signed(self, name: str, extension: str) -> tuple[Path, Path]:
        self._openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=products test {name}",
        )  # fmt: skip
        (self.dir / f"{name}.ext").write_text(extension + "\n")
        self._openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        )  # fmt: skip
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"

    def server_options(self) -> list[str]:
        """redis-server's TLS settings: clients must show a certificate of the CA (Redis's default)."""
        return [
            "--tls-cert-file", str(self.server_cert), "--tls-key-file", str(self.server_key),
            "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "yes",
            # Replication, the cluster bus and a sentinel's own connections use TLS too.
            "--tls-replication", "yes", "--tls-cluster", "yes",
        ]  # fmt: skip

    def client_kwargs(self) -> dict:
        return {
            "ssl": True,
            "ssl_ca_certs": str(self.ca),
            "ssl_certfile": str(self.client_cert),
            "ssl_keyfile": str(self.client_key),
        }

    def url_query(self, ca: Path | None = None) -> str:
        """REDIS_URL's query giving the service the CA (``ca``: another one) and the client certificate."""
        return f"?ssl_ca_certs={ca or self.ca}&ssl_certfile={self.client_cert}&ssl_keyfile={self.client_key}"


class RedisNode:
    """One redis-server process (data node or sentinel) with its own dir and port.

    With ``tls``, its port takes TLS only (``listen_tls=False``: a plain port,
    for a sentinel that still reaches TLS data nodes with TLS).
    """

    def __init__(
        self,
        root: Path,
        *args: str,
        sentinel_conf: str | None = None,
        db: int = 0,
        tls: TLSFiles | None = None,
        listen_tls: bool = True,
    ) -> None:
        self.root = root
        self.db = db
        self.tls, self.listen_tls = tls, listen_tls
        self.password = SENTINEL_PASSWORD if sentinel_conf is not None else DATA_PASSWORD
        self.args = args
        self.sentinel_conf = sentinel_conf
        self.proc: subprocess.Popen | None = None
        self.started = False
        self.elected_at: float | None = None  # when a manual failover promoted it (monotonic)
        self._choose_port()

    def _choose_port(self) -> None:
        self.port = free_port(cluster_bus="--cluster-enabled" in self.args)
        self.dir = self.root / str(self.port)
        self.dir.mkdir()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> None:
        """Start the process (again: same port, same dir); a first start that finds its port taken moves."""
        for _ in range(3):
            self._spawn()
            if answering(self.proc, self.port, self.password, **self._client_tls()):
                self.started = True
                return
            if self.started:  # a restart keeps its port: the others know it
                break
            self._choose_port()
        log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
        raise AssertionError(f"redis-server on port {self.port} exited at start:\n{log}")

    def _spawn(self) -> None:
        command = [_binary("redis-server")]
        tls = self.tls.server_options() if self.tls else []
        ports = (
            ["--port", "0", "--tls-port", str(self.port)]
            if tls and self.listen_tls
            else ["--port", str(self.port)]
        )
        if self.sentinel_conf is not None:
            conf = self.dir / "sentinel.conf"
            if not conf.exists():  # a restart keeps what the sentinel learnt
                conf.write_text(f"bind 127.0.0.1\ndir {self.dir}\n{self.sentinel_conf}")
            command += [str(conf), "--sentinel", *ports, *tls]
        else:
            command += [*ports, "--bind", "127.0.0.1", "--dir", str(self.dir), *tls]
            command += ["--save", "", "--appendonly", "no", *self.args]
            command += ["--requirepass", DATA_PASSWORD, "--masterauth", DATA_PASSWORD]
            # Replicas sync at once (the default waits 5 s for more replicas to join).
            command += ["--repl-diskless-sync-delay", "0"]
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        log.close()

    def _client_tls(self) -> dict:
        return self.tls.client_kwargs() if self.tls and self.listen_tls else {}

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",  # not "localhost": the TLS certificate names the address
            port=self.port,
            socket_timeout=2,
            password=self.password,
            db=self.db,
            **self._client_tls(),
            **kwargs,
        )

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): it answers nothing, replicates nothing."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop_replicating_from(self, master: RedisNode) -> None:
        """Cut this replica off ``master`` until :meth:`replicate_again`: what the master writes next stays there.

        A paused replica would not do: the master's writes wait in its
        socket's receive buffer, and it applies them when it resumes.
        """
        self.client().config_set("masterauth", "not the password")  # it cannot resync
        master.client().client_kill_filter(_type="replica")

    def replicate_again(self) -> None:
        self.client().config_set("masterauth", DATA_PASSWORD)


class Topology:
    """Processes started for one topology; ``stop()`` kills them all by pid."""

    def __init__(self, name: str, tls: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"products-test-{name}-"))
        self.nodes: list[RedisNode] = []
        self.tls = TLSFiles(self.root) if tls else None

    def node(
        self, *args: str, sentinel_conf: str | None = None, db: int = 0, listen_tls: bool = True
    ) -> RedisNode:
        node = RedisNode(
            self.root, *args, sentinel_conf=sentinel_conf, db=db, tls=self.tls, listen_tls=listen_tls
        )
        self.nodes.append(node)
        node.start()
        return node

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive():
                node.resume()
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)


# --- Redis Cluster: 3 masters, each with one replica ---------------------------------


class Cluster(Topology):
    def __init__(self, masters: int = 3, replicas: int = 1, tls: bool = False) -> None:
        super().__init__("cluster", tls=tls)
        self.master_count, self.replicas = masters, replicas
        try:
            self._create(masters)
        except BaseException:
            self.stop()
            raise

    def _create(self, masters: int) -> None:
        args = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(CLUSTER_NODE_TIMEOUT_MS),
        )
        for _ in range(masters * (1 + self.replicas)):
            self.node(*args)
        subprocess.run(
            [
                _binary("redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
                "-a",
                DATA_PASSWORD,
                "--no-auth-warning",
                *self._cli_tls(),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_healthy(timeout=30)

    def _cli_tls(self) -> list[str]:
        if not self.tls:
            return []
        files = self.tls
        return [
            "--tls",
            "--cacert",
            str(files.ca),
            "--cert",
            str(files.client_cert),
            "--key",
            str(files.client_key),
        ]

    @property
    def env(self) -> dict[str, str]:
        """The environment that points the service at this cluster (a subset of its nodes)."""
        url = (
            f"rediss://{DATA_URL_CREDENTIALS}{self.tls.url_query()}"
            if self.tls
            else f"redis://{DATA_URL_CREDENTIALS}/0"
        )
        return {
            "REDIS_CLUSTER_NODES": ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2]),
            "REDIS_URL": url,  # the password (and the CA and client certificate) only
        }

    def masters(self) -> list[RedisNode]:
        """The live nodes that are masters now, by their own account."""
        found = []
        for node in self.nodes:
            if node.alive():
                try:
                    if node.client().info("replication")["role"] == "master":
                        found.append(node)
                except redis.RedisError:
                    pass
        return found

    def wait_healthy(self, timeout: float = 30) -> None:
        """Wait until every live node says cluster_state:ok and each master has a replica."""

        def healthy() -> bool:
            live = [n for n in self.nodes if n.alive()]
            if any(n.client().cluster("info")["cluster_state"] != "ok" for n in live):
                return False
            masters = self.masters()
            return (
                len(masters) == self.master_count
                and all(m.client().info("replication")["connected_slaves"] >= self.replicas for m in masters)
                and replicas_synced(live)
            )

        wait_for(healthy, timeout, "the cluster to be healthy", interval=0.1)

    def master_of(self, key: str) -> RedisNode:
        slot = self.nodes[0].client().cluster("keyslot", key)
        for node in self.masters():
            for start, end, *_ in node.client().execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end and _[0][1] == node.port:
                    return node
        raise AssertionError(f"no master serves slot {slot}")

    def wait_serving(self, timeout: float = 60) -> None:
        """Wait until every live node says cluster_state:ok with all masters up (replicas or not).

        If not, the message says what each node reported, and their logs'
        lines about elections (that is how the stale election behind
        :data:`CLUSTER_ELECTION_RETRY_S` was found).
        """
        seen: dict[str, object] = {}

        def serving() -> bool:
            live = [n for n in self.nodes if n.alive()]
            states = {n.port: n.client().cluster("info")["cluster_state"] for n in live}
            masters = [m.port for m in self.masters()]
            seen.update(states=states, masters=masters)
            seen["nodes"] = {n.port: n.client().execute_command("CLUSTER", "NODES") for n in live[:1]}
            return all(state == "ok" for state in states.values()) and len(masters) == self.master_count

        try:
            wait_for(serving, timeout, "the cluster to serve every slot", interval=0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {seen}; elections: {self.election_log()}") from None

    def election_log(self) -> dict[int, list[str]]:
        """Each node's log lines about elections, epochs and failures (for a failure's message)."""
        words = ("lection", "poch", "ailover", "FAIL", "master", "Master")
        return {
            node.port: [
                line
                for line in (node.dir / "redis.log").read_text(errors="replace").splitlines()
                if any(word in line for word in words)
            ][-40:]
            for node in self.nodes
        }

    def node_holding(self, match: str) -> tuple[RedisNode, bytes]:
        """Return a master holding a key that matches ``match``, and that key."""
        for master in self.masters():
            for key in master.client().scan_iter(match=match, count=1000):
                return master, key
        raise AssertionError(f"no master holds a key matching {match!r}")

    def replica_of(self, master: RedisNode) -> RedisNode:
        port = int(master.client().info("replication")["slave0"]["port"])
        return next(n for n in self.nodes if n.port == port)

    def keys_per_master(self, match: str) -> dict[int, int]:
        return {m.port: sum(1 for _ in m.client().scan_iter(match=match, count=1000)) for m in self.masters()}

    def manual_failover(self, to: RedisNode) -> None:
        """Promote the replica ``to`` with CLUSTER FAILOVER (its master stays up, demoted) and wait.

        A manual failover gives up quietly after twice the node timeout (a busy
        machine: the master answered late); asked again every few seconds.
        """
        deadline = time.monotonic() + 60
        while to.client().info("replication")["role"] != "master":
            assert time.monotonic() < deadline, "no manual failover within 60 s"
            to.client().execute_command("CLUSTER", "FAILOVER")
            try:
                wait_for(
                    lambda: to.client().info("replication")["role"] == "master", 5, "the manual failover"
                )
            except AssertionError:
                continue
        to.elected_at = time.monotonic()
        self.wait_healthy(timeout=30)

    def wait_election_forgotten(self, node: RedisNode) -> None:
        """Wait until a failover of ``node``'s master would hold a new election (see CLUSTER_ELECTION_RETRY_S)."""
        if node.elected_at is not None:
            time.sleep(max(0.0, node.elected_at + CLUSTER_ELECTION_RETRY_S + 0.5 - time.monotonic()))

    def restart(self, node: RedisNode) -> None:
        """Start a killed node again; it rejoins (as a replica, when it was failed over)."""
        node.start()
        self.wait_healthy(timeout=30)


# --- Sentinel: 1 master, 1 replica, 3 sentinels -----------------------------------------


class SentinelSet(Topology):
    def __init__(self, tls: bool = False) -> None:
        super().__init__("sentinel", tls=tls)
        try:
            self._create()
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        self.master = self.node(db=SENTINEL_DB)
        self.replica = self.node("--replicaof", "127.0.0.1", str(self.master.port), db=SENTINEL_DB)
        self.sentinel_conf = conf = (
            f'requirepass "{SENTINEL_PASSWORD}"\n'
            f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self.master.port} 2\n"
            f'sentinel auth-pass {SENTINEL_MASTER} "{DATA_PASSWORD}"\n'
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} {SENTINEL_DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} {SENTINEL_FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
        )
        self.sentinels = [self.node(sentinel_conf=conf) for _ in range(3)]
        self.wait_healthy()

    @property
    def env(self) -> dict[str, str]:
        return {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
            "REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
            "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
            # The data nodes' password and database number (and TLS files) still come from here.
            "REDIS_URL": (
                f"rediss://{DATA_URL_CREDENTIALS}/{SENTINEL_DB}{self.tls.url_query()}"
                if self.tls
                else f"redis://{DATA_URL_CREDENTIALS}/{SENTINEL_DB}"
            ),
        }

    def master_address(self) -> tuple[str, int] | None:
        """The master the sentinels name now."""
        for sentinel in self.sentinels:
            try:
                host, port = sentinel.client().sentinel_get_master_addr_by_name(SENTINEL_MASTER)
                return host, int(port)
            except (redis.RedisError, TypeError):
                continue
        return None

    def current_master(self) -> RedisNode:
        port = self.master_address()[1]
        return next(n for n in self.nodes if n.port == port)

    def current_replica(self) -> RedisNode:
        master = self.current_master()
        return next(n for n in (self.master, self.replica) if n is not master)

    def wait_healthy(self, timeout: float = 30) -> None:
        """Wait until the sentinels agree on a master that has a synced replica and sees them all."""

        def healthy() -> bool:
            master = self.current_master()
            replication = master.client().info("replication")
            if replication["role"] != "master" or replication["connected_slaves"] < 1:
                return False
            if not replicas_synced([n for n in (self.master, self.replica) if n.alive()]):
                return False
            for sentinel in self.sentinels:
                if not sentinel.alive():
                    continue
                info = sentinel.client().sentinel_master(SENTINEL_MASTER)
                if info["port"] != master.port or info["is_sdown"] or info["is_odown"]:
                    return False
                if info["num-other-sentinels"] < 2 or info["num-slaves"] < 1:
                    return False
            return True

        wait_for(healthy, timeout, "the Sentinel set to be healthy", interval=0.1)

    def restart(self, node: RedisNode) -> None:
        """Start a killed data node again as a replica of the current master (as the master, if no failover came)."""
        address = self.master_address()
        # Told at once, rather than left for the sentinels to demote (~10 s).
        node.args = () if address is None or address[1] == node.port else ("--replicaof", *map(str, address))
        node.start()
        self.wait_healthy(timeout=30)


# Session fixtures are registered once, in conftest.py: a test module that
# imported them would get its own instance (pytest keeps one per module that
# defines a fixture), and a second set of processes.
@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelSet]:
    sentinels = SentinelSet()
    yield sentinels
    sentinels.stop()


def cache_settings_for(env: dict[str, str], settings) -> dict:
    """Return CACHES['default'] as settings.py would build it from ``env`` (this run's prefix)."""
    topology = redis_config.read_topology(env)
    assert not topology.problems, topology.problems
    return topology, redis_config.cache_settings(
        topology,
        key_prefix=settings.CACHES["default"]["KEY_PREFIX"],
        timeout=settings.PRODUCT_CACHE_TIMEOUT,
        # Generous on a loaded test machine: a stray 100 ms stall would open
        # the breaker and turn an expected hit into a miss. Dead nodes refuse
        # at once on loopback, so failovers are not slowed by it.
        socket_timeout=0.5,
        max_connections=64,
    )


def use_topology(settings, env: dict[str, str]) -> None:
    """Point the Django cache (and the settings the commands read) at a topology."""
    topology, config = cache_settings_for(env, settings)
    settings.CACHES = {**settings.CACHES, "default": config}
    settings.REDIS_TOPOLOGY = topology
    settings.REDIS_URL = topology.url
    settings.REDIS_SOCKET_TIMEOUT = config["OPTIONS"]["SOCKET_TIMEOUT"]  # what its connections have
    # Pools outlive a test: django-redis keeps them per process, keyed by
    # LOCATION alone. A Sentinel pool stays bound to the sentinels it was
    # built with, and every Sentinel set of the run has the same LOCATION
    # (service name, password, db), so a pool left by another set would
    # send this test's commands to that set. Build this test's anew; that
    # also drops connections a failover left pointing at a demoted node.
    from django.core.cache import caches

    from .cache_state import forget_pools

    forget_pools(*config["LOCATION"])
    client = caches["default"].client.get_client(write=True)
    if hasattr(client, "connection_pool"):
        client.connection_pool.disconnect()
    else:
        client.disconnect_connection_pools()
