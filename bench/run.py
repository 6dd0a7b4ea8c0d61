#!/usr/bin/env python
"""Side-by-side benchmark: the service against the references it must beat.

One command (see docs/performance.md)::

    .venv/bin/python bench/run.py            # full run, ~5 minutes
    .venv/bin/python bench/run.py --quick    # 1 round of 3 s runs, for a smoke check

A complete run also writes its table and goals into docs/performance.md (only
the section between the generated markers) and draws docs/performance.png
(req/s and CPU per request, every server and scenario); ``--docs`` /
``--no-docs`` force either way.

It seeds 10,000 products into a throwaway SQLite file, starts a throwaway
redis-server (or uses ``--redis-url`` with its own key prefixes), starts every
server under gunicorn with the same settings, drives each with wrk on loopback
(rounds interleaved, so machine drift hits all alike), then prints a table and
writes bench/results/<timestamp>.json.

Servers:

* ``ceiling``: a bare WSGI callable returning one fixed product JSON;
* ``flask``: the original's approach (Flask + redis-py + sqlite3);
* ``service``: this project, as deployed (throttling on, with rates high
  enough that nothing is refused);
* ``service_nocache``: the same with ``PRODUCT_CACHE_ENABLED=0``;
* ``drf_plain``: a plain DRF ModelViewSet without cache (the naive port).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PRODUCTS = 10_000
HOT = "product-00042"
HIGH_RATE = "100000000/minute"
UNEVEN_SHARE = 0.2  # a worker's least share of its server's CPU in an even run (2 workers: 0.5)


def say(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("Installing wrk (apt-get)")
        if subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True).returncode:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True)
    wrk = shutil.which("wrk")
    if not wrk:
        sys.exit("wrk is not installed: apt-get install wrk (or brew install wrk)")
    return wrk


# --- Redis ---------------------------------------------------------------------


class Redis:
    def __init__(self, url: str | None, workdir: Path) -> None:
        self.proc: subprocess.Popen | None = None
        if url:
            self.url = url
            return
        binary = shutil.which("redis-server")
        if not binary:
            sys.exit("redis-server is not installed (apt-get install redis-server), or pass --redis-url")
        port = free_port()
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{port}/0"

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def wait(self) -> None:
        import redis

        for _ in range(100):
            try:
                self.client().ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        sys.exit(f"Redis at {self.url} does not answer")

    def cpu_seconds(self) -> float:
        """CPU time used so far by the throwaway redis-server (0 for an outside Redis)."""
        if self.proc is None:
            return 0.0
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def forget(self, prefix: str) -> None:
        """Delete every key under ``prefix`` (a cold start for that server)."""
        client = self.client()
        batch = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for start in range(0, len(batch), 5000):
            client.unlink(*batch[start : start + 5000])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


# --- Servers --------------------------------------------------------------------


@dataclass
class Server:
    name: str
    app: str
    env: dict[str, str]
    prefix: str
    port: int = 0  # chosen at start, once the servers started before it are listening
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, gunicorn: list[str], probe: str) -> None:
        # A port picked at construction could be handed out twice before any
        # server binds it; the probe would then measure the other server.
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                self.app,
                "--bind",
                f"127.0.0.1:{self.port}",
                "--chdir",
                str(ROOT),
                "--log-level",
                "warning",
                "--config",
                str(ROOT / "bench" / "gunicorn_bench_conf.py"),
                *gunicorn,
            ],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
        )
        for _ in range(400):
            try:
                with urllib.request.urlopen(self.url + probe, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
            if self.proc.poll() is not None:
                break
        self.stop()
        sys.exit(f"{self.name} did not start (gunicorn {self.app})")

    def worker_memory_mb(self) -> tuple[float, float]:
        """Mean RSS and PSS of this server's gunicorn workers, in MiB.

        RSS counts every page a worker maps; PSS splits pages shared with
        the master and the other workers between them (what --preload saves).
        """
        rss, pss = [], []
        for pid in _children(self.proc.pid):
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        rss.append(int(line.split()[1]) / 1024)
                    elif line.startswith("Pss:"):
                        pss.append(int(line.split()[1]) / 1024)
            except OSError:
                continue
        mean = lambda values: round(statistics.mean(values), 1) if values else float("nan")  # noqa: E731
        return mean(rss), mean(pss)

    def cpu_by_worker(self) -> dict[int, float]:
        """CPU time (user + system) used so far by each of this server's workers."""
        seconds = {}
        for pid in _children(self.proc.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        return seconds

    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_worker().values())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


# --- Redis Cluster (--redis-cluster) ------------------------------------------------


def add_cluster_service(available: dict, order: list, template: Server, prefix: str, database_url: str):
    """Start a local 3-master Redis Cluster and a service on it, read beside ``service``.

    Returns the cluster (the caller stops it). Same settings as ``service``
    except the Redis (REDIS_CLUSTER_NODES instead of REDIS_URL) and its own
    copy of the database (see ``copy_database``).
    """
    sys.path.insert(0, str(ROOT))
    from products.tests.support.redis_topologies import Cluster

    say("Starting a 3-master Redis Cluster (no replicas)")
    cluster = Cluster(masters=3, replicas=0)
    env = {
        **template.env,
        "REDIS_URL": "",
        "CACHE_KEY_PREFIX": prefix,
        "DATABASE_URL": database_url,
        **cluster.env,
    }
    available["service_cluster"] = Server("service_cluster", template.app, env, prefix)
    for scenario in order:
        if scenario.key in ("hot_api", "hot_legacy"):
            scenario.paths["service_cluster"] = scenario.paths["service"]
    return cluster


# --- wrk -----------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    wrk: str,
    url: str,
    seconds: float,
    connections: int,
    script: str | None = None,
    args: list[str] | None = None,
) -> dict:
    command = [wrk, "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "5s"]
    if script:
        command += ["-s", str(BENCH / "lua" / script)]
    command.append(url)
    if args:
        command += ["--", *args]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    try:
        return _parse_wrk(out)
    except (AttributeError, ValueError):
        raise RuntimeError(f"cannot read wrk's output:\n{out}") from None


def _parse_wrk(out: str) -> dict:
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "errors": 0,
    }
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        result["errors"] += int(bad.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        # Read errors are connections the server closed (sync workers close
        # after every response): not failures. The others are.
        result["errors"] += int(sock.group(1)) + int(sock.group(3)) + int(sock.group(4))
    return result


# --- Scenarios -------------------------------------------------------------------


@dataclass
class Scenario:
    key: str
    title: str
    paths: dict[str, str]  # server -> path (or, with a script, wrk args)
    baseline: str  # the server whose figure each row is compared with
    script: str | None = None
    cold: bool = False


def scenarios(run_id: str, token: str) -> list[Scenario]:
    return [
        Scenario(
            "hot_api",
            "one hot name, GET /api/products/{name}/",
            {
                "ceiling": f"/api/products/{HOT}/",
                "flask": f"/products/{HOT}",
                "service": f"/api/products/{HOT}/",
            },
            baseline="flask",
        ),
        Scenario(
            "hot_legacy",
            "one hot name, GET /products/{name} (legacy route)",
            {"flask": f"/products/{HOT}", "service": f"/products/{HOT}"},
            baseline="flask",
        ),
        Scenario(
            "random_cold",
            f"random names of {PRODUCTS:,}, starting cold",
            {"flask": "/|/products/|", "service": "/|/api/products/|/"},
            baseline="flask",
            script="random.lua",
            cold=True,
        ),
        Scenario(
            "cache_off",
            "one name, cache disabled",
            {"service_nocache": f"/api/products/{HOT}/", "drf_plain": f"/api/products/{HOT}/"},
            baseline="drf_plain",
        ),
        Scenario(
            "list",
            "list, first page (50)",
            {"service": "/api/products/", "drf_plain": "/api/products/"},
            baseline="drf_plain",
        ),
        Scenario(
            "create",
            "create (authenticated where the server has auth)",
            {
                "flask": f"/products|{run_id}|",
                "service": f"/api/products/|{run_id}|{token}",
                "drf_plain": f"/api/products/|{run_id}|{token}",
            },
            baseline="flask",
            script="create.lua",
        ),
    ]


# --- Setup -----------------------------------------------------------------------

_SEED = """
import random
from decimal import Decimal
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from products.models import Product

rng = random.Random(1)
Product.objects.bulk_create(
    Product(name=f"product-{i:05d}", price=Decimal(rng.randint(100, 99999)) / 100,
            quantity=rng.randint(0, 500))
    for i in range(1, %d + 1)
)
user = User.objects.create_user("bench", password="bench-password")
user.user_permissions.set(Permission.objects.filter(codename__in=["add_product", "change_product"]))
print("TOKEN", Token.objects.create(user=user).key)
"""


def django_env(
    base: dict[str, str], db_url: str, redis_url: str, prefix: str, **extra: str
) -> dict[str, str]:
    return {
        **base,
        "DJANGO_SETTINGS_MODULE": "productsite.settings",
        "SECRET_KEY": "bench-only-not-a-secret",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "CACHE_KEY_PREFIX": prefix,
        "THROTTLE_ANON_RATE": HIGH_RATE,
        "THROTTLE_USER_RATE": HIGH_RATE,
        "LOG_LEVEL": "WARNING",
        # No collectstatic for a bench: the static files are never asked for.
        "PYTHONWARNINGS": "ignore:No directory at",
        **extra,
    }


def copy_database(seeded: Path, name: str) -> str:
    """Copy the seeded SQLite database for one Django server; return the copy's URL.

    Every Django server here runs the product cache, whose ledger of Redis
    servers lives in the database. Processes sharing a database must share
    REDIS_URL and CACHE_KEY_PREFIX (docs/cache.md); with one key prefix per
    server on one file, each server's poll would retire the others' buckets
    about once a second, and a cached read would not stay cached.
    """
    copy = seeded.with_name(f"{name}.sqlite3")
    source, target = sqlite3.connect(seeded), sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return f"sqlite:///{copy}"


def seed(env: dict[str, str]) -> str:
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", _SEED % PRODUCTS],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return re.search(r"TOKEN (\w+)", out).group(1)


# --- Report ----------------------------------------------------------------------


def summarise(runs: list[dict]) -> dict:
    return {
        "rps": round(statistics.median(r["rps"] for r in runs), 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 3),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 3),
        "rss_mb": max(r["rss_mb"] for r in runs),
        "pss_mb": max(r["pss_mb"] for r in runs),
        "cpu_us": round(statistics.median(r["cpu_us"] for r in runs), 1),
        "redis_cpu_us": round(statistics.median(r["redis_cpu_us"] for r in runs), 1),
        "errors": sum(r["errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "rounds_rps": [round(r["rps"], 1) for r in runs],
    }


def _ratio(value: float, reference: float | None) -> str:
    return _fmt(value / reference if reference else None)


def _fmt(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def paired(runs: dict, a: tuple[str, str], b: tuple[str, str], field: str = "rps") -> float | None:
    """Median over rounds of a's figure over b's from the same round.

    The two runs of a round are minutes apart at most, so load from
    neighbours on the machine moves both; a ratio of medians would mix
    rounds taken under different load.
    """
    first = runs.get(a[0], {}).get(a[1])
    second = runs.get(b[0], {}).get(b[1])
    if not first or not second:
        return None
    return statistics.median(x[field] / y[field] for x, y in zip(first, second) if y[field])


def table(results: dict, order: list[Scenario], runs: dict) -> str:
    lines = [
        "| scenario | server | req/s | p50 ms | p99 ms | worker RSS (PSS) MiB | worker (Redis) CPU us/req | "
        "req/s vs baseline | p50 vs baseline | RSS vs baseline | CPU/req vs baseline | "
        "req/s vs ceiling | non-2xx |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario in order:
        rows = results.get(scenario.key)
        if not rows:
            continue
        base = rows.get(scenario.baseline)
        for server, row in rows.items():
            lines.append(
                f"| {scenario.title} | {server}{' (baseline)' if server == scenario.baseline else ''} "
                f"| {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['rss_mb']:.0f} ({row['pss_mb']:.0f}) "
                f"| {row['cpu_us']:.0f} ({row['redis_cpu_us']:.0f}) "
                f"| {_fmt(paired(runs, (scenario.key, server), (scenario.key, scenario.baseline)))} "
                f"| {_ratio(row['p50_ms'], base and base['p50_ms'])} "
                f"| {_ratio(row['rss_mb'], base and base['rss_mb'])} "
                f"| {_ratio(row['cpu_us'], base and base['cpu_us'])} "
                f"| {_fmt(paired(runs, (scenario.key, server), ('hot_api', 'ceiling')))} | {row['errors']} |"
            )
    return "\n".join(lines)


def goals(results: dict, runs: dict) -> list[tuple[str, bool, str]]:
    """Check issue 15's goals; ratios come from the same run."""
    checks = []

    def check(label: str, ratio: float | None, target: float, lower: bool = False):
        if ratio is None:
            return
        ok = ratio <= target if lower else ratio >= target
        checks.append((label, ok, f"{ratio:.2f}x (goal {'<=' if lower else '>='} {target}x)"))

    for key, route in (("hot_api", "/api/products/{name}/"), ("hot_legacy", "/products/{name}")):
        check(f"hot GET {route} vs Flask", paired(runs, (key, "service"), (key, "flask")), 1.3)
        check(f"hot GET {route} vs ceiling", paired(runs, (key, "service"), ("hot_api", "ceiling")), 0.7)
    check(
        "random names from cold vs Flask",
        paired(runs, ("random_cold", "service"), ("random_cold", "flask")),
        1.15,
    )
    check(
        "authenticated create vs Flask's create (both SQLite WAL, synchronous=NORMAL)",
        paired(runs, ("create", "service"), ("create", "flask")),
        0.5,
    )
    check(
        "list, first page of 50, vs plain DRF", paired(runs, ("list", "service"), ("list", "drf_plain")), 2.0
    )
    check(
        "cache disabled vs plain DRF",
        paired(runs, ("cache_off", "service_nocache"), ("cache_off", "drf_plain")),
        1.5,
    )
    check(
        "hot GET /api/products/{name}/ on a 3-master Redis Cluster vs one Redis",
        paired(runs, ("hot_api", "service_cluster"), ("hot_api", "service")),
        0.9,
    )
    for figure, label in (("rss_mb", "RSS"), ("pss_mb", "PSS")):
        service = results.get("hot_api", {}).get("service", {}).get(figure)
        flask = results.get("hot_api", {}).get("flask", {}).get(figure)
        if service and flask:
            check(f"worker memory ({label}) vs Flask", service / flask, 1.4, lower=True)
    return checks


def publish(header: str, table_text: str, outcome: list, command: str, results: dict, order) -> None:
    """Write the run's table and goals into docs/performance.md, and its chart."""
    sys.path.insert(0, str(ROOT))
    from bench import report

    chart = ROOT / "docs" / "performance.png"
    report.write_chart(chart, results, {s.key: s.title for s in order})
    lines = [
        "## Latest benchmark run",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. {header}",
        "",
        table_text,
        "",
        "Goals (issue 15):",
        "",
        *[f"- {'met' if ok else '**missed**'}: {label}: {text}" for label, ok, text in outcome],
        "",
        f"![req/s and CPU per request, every server and scenario]({chart.name})",
    ]
    report.write_section(ROOT / "docs" / "performance.md", "\n".join(lines))
    say(f"Wrote docs/performance.md and docs/{chart.name}")


# --- Main ------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one wrk run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--preload",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gunicorn --preload for every server (default, as gunicorn.conf.py deploys; --no-preload to compare)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="also run the service with this environment in the read scenarios "
        "(measure one change against the service in the same run)",
    )
    parser.add_argument(
        "--uneven-repeats",
        type=int,
        default=2,
        help="measure a run again (at most this many times) when one worker did under "
        f"{UNEVEN_SHARE:.0%}% of the server's work (0: never)",
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s runs")
    parser.add_argument("--only", default="", help="comma-separated scenario keys")
    parser.add_argument("--servers", default="", help="comma-separated server names")
    parser.add_argument("--redis-url", default="", help="use this Redis instead of a throwaway one")
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the service (to measure one change)",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="also run the service on a local 3-master Redis Cluster (server service_cluster) in the hot reads",
    )
    parser.add_argument("--label", default="", help="a note stored with the results")
    parser.add_argument(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the table and chart to docs/performance.md and docs/performance.png "
        "(default: only for a complete run, so a smoke check does not replace the published figures)",
    )
    opts = parser.parse_args()
    if opts.uneven_repeats < 0:
        parser.error("--uneven-repeats must be 0 or more")
    if opts.quick:
        opts.rounds, opts.seconds = 1, 3.0

    wrk = ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="productsite-bench-"))
    run_id = uuid.uuid4().hex[:8]
    redis_server = Redis(opts.redis_url or None, workdir)
    servers: dict[str, Server] = {}
    cluster = None
    try:
        redis_server.wait()
        db_file = workdir / "bench.sqlite3"
        db_url = f"sqlite:///{db_file}"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))}
        say(f"Seeding {PRODUCTS:,} products into {db_file}")
        token = seed(django_env(base, db_url, redis_server.url, f"bench-{run_id}-seed"))

        def own_database(name: str) -> str:
            return copy_database(db_file, name)

        redis_server.forget(f"bench-{run_id}-seed")

        gunicorn = [
            "--workers",
            str(opts.workers),
            "--worker-class",
            opts.worker_class,
            "--threads",
            str(opts.threads),
        ] + (["--preload"] if opts.preload else [])
        extra = dict(item.split("=", 1) for item in opts.service_env)

        def prefix(name: str) -> str:
            return f"bench-{run_id}-{name}"

        available = {
            "ceiling": Server("ceiling", "bench.apps.ceiling:application", base, prefix("ceiling")),
            "flask": Server(
                "flask",
                "bench.apps.flask_ref:app",
                {
                    **base,
                    "REDIS_URL": redis_server.url,
                    "CACHE_KEY_PREFIX": prefix("flask"),
                    "BENCH_SQLITE": str(db_file),
                },
                prefix("flask"),
            ),
            "service": Server(
                "service",
                "productsite.wsgi:application",
                django_env(base, own_database("service"), redis_server.url, prefix("service"), **extra),
                prefix("service"),
            ),
            "service_nocache": Server(
                "service_nocache",
                "productsite.wsgi:application",
                django_env(
                    base,
                    own_database("service_nocache"),
                    redis_server.url,
                    prefix("nocache"),
                    PRODUCT_CACHE_ENABLED="0",
                    **extra,
                ),
                prefix("nocache"),
            ),
            "drf_plain": Server(
                "drf_plain",
                "bench.drf_plain.wsgi:application",
                django_env(
                    base,
                    own_database("drf_plain"),
                    redis_server.url,
                    prefix("drf"),
                    DJANGO_SETTINGS_MODULE="bench.drf_plain.settings",
                ),
                prefix("drf"),
            ),
        }
        order = scenarios(run_id, token)
        if opts.redis_cluster:
            cluster = add_cluster_service(
                available, order, available["service"], prefix("cluster"), own_database("service_cluster")
            )
        for spec in opts.variant:
            vname, _, assignments = spec.partition(":")
            venv = dict(item.split("=", 1) for item in assignments.split(",") if item)
            available[vname] = Server(
                vname,
                "productsite.wsgi:application",
                django_env(base, own_database(vname), redis_server.url, prefix(vname), **{**extra, **venv}),
                prefix(vname),
            )
            for scenario in order:
                if scenario.key in ("hot_api", "hot_legacy", "random_cold"):
                    scenario.paths[vname] = scenario.paths["service"]
        if opts.only:
            keep = set(opts.only.split(","))
            order = [s for s in order if s.key in keep]
        wanted = set(opts.servers.split(",")) if opts.servers else set(available)
        needed = {name for s in order for name in s.paths if name in wanted}
        for name in [n for n in available if n in needed]:
            say(f"Starting {name} ({' '.join(gunicorn)})")
            server = available[name]
            probe = "/products/" + HOT if name == "flask" else f"/api/products/{HOT}/"
            server.start(gunicorn, probe)
            servers[name] = server
            # Warm every worker (imports, connections) on the hot path.
            run_wrk(wrk, server.url + probe, 1, opts.connections)

        runs: dict[str, dict[str, list[dict]]] = {}
        total = opts.rounds * sum(len([n for n in s.paths if n in servers]) for s in order)
        done = 0
        for round_no in range(opts.rounds):
            for scenario in order:
                names = [n for n in scenario.paths if n in servers]
                # Rotate the order each round so drift does not favour anyone.
                names = names[round_no % len(names) :] + names[: round_no % len(names)]
                for name in names:
                    server = servers[name]
                    spec = scenario.paths[name]
                    args = None
                    if scenario.script:
                        path, *args = spec.split("|")
                        if scenario.key == "create":
                            args[0] = f"{args[0]}-{name}-r{round_no}"
                        if scenario.key == "random_cold":
                            args.append(str(PRODUCTS))
                    else:
                        path = spec
                    done += 1
                    say(f"[{done}/{total}] round {round_no + 1}: {scenario.key} on {name}")
                    for attempt in range(1 + opts.uneven_repeats):
                        if scenario.cold:
                            redis_server.forget(server.prefix)
                        run_args = list(args) if args else None
                        if run_args and scenario.key == "create" and attempt:
                            run_args[0] += f"-again{attempt}"  # fresh names: no 409s
                        workers_before, redis_before = server.cpu_by_worker(), redis_server.cpu_seconds()
                        result = run_wrk(
                            wrk, server.url + path, opts.seconds, opts.connections, scenario.script, run_args
                        )
                        workers = server.cpu_by_worker()
                        used = [workers[pid] - workers_before.get(pid, 0.0) for pid in workers]
                        share = min(used) / sum(used) if len(used) > 1 and sum(used) > 0 else 1.0
                        # gunicorn's workers race for each new connection, and
                        # wrk opens its few keep-alive connections at once: now
                        # and then one worker wins (nearly) all of them and the
                        # server runs on one core. Measured again, at most
                        # --uneven-repeats times, whichever server draws it.
                        if share >= UNEVEN_SHARE or attempt == opts.uneven_repeats:
                            break
                        say(f"    one worker did {share:.0%} of the work: measured again")
                    result["repeats"] = attempt
                    result["least_worker_share"] = round(share, 3)
                    # CPU per request is what throughput would be on an idle
                    # machine; it shifts far less than req/s when neighbours
                    # load the cores.
                    result["cpu_us"] = sum(used) * 1e6 / max(1, result["requests"])
                    result["redis_cpu_us"] = (
                        (redis_server.cpu_seconds() - redis_before) * 1e6 / max(1, result["requests"])
                    )
                    result["rss_mb"], result["pss_mb"] = server.worker_memory_mb()
                    runs.setdefault(scenario.key, {}).setdefault(name, []).append(result)

        results = {
            key: {name: summarise(rounds) for name, rounds in by_server.items()}
            for key, by_server in runs.items()
        }
        measured = sum(len(rows) for by_server in runs.values() for rows in by_server.values())
        repeated = sum(
            1 for by_server in runs.values() for rows in by_server.values() for r in rows if r["repeats"]
        )
        header = (
            f"{opts.rounds} round(s) x {opts.seconds:g} s, wrk -t2 -c{opts.connections}, "
            f"gunicorn {' '.join(gunicorn)}, {PRODUCTS:,} products, SQLite (WAL, synchronous=NORMAL, "
            f"for every server); figures are medians over rounds; req/s ratios are medians of "
            f"same-round ratios; RSS/PSS: the largest mean per-worker figure seen; "
            f"a run where one worker did under {UNEVEN_SHARE:.0%} of the work was measured again "
            f"(at most {opts.uneven_repeats} times; {repeated} of {measured} runs)"
        )
        table_text = table(results, order, runs)
        print()
        print(header)
        print()
        print(table_text)
        print()
        outcome = goals(results, runs)
        for label, ok, text in outcome:
            print(f"- {'MET ' if ok else 'MISSED'} {label}: {text}")
        errors = sum(row["errors"] for rows in results.values() for row in rows.values())
        print(f"- non-2xx responses and socket errors, all runs: {errors}")

        out_dir = BENCH / "results"
        out_dir.mkdir(exist_ok=True)
        out_file = out_dir / time.strftime("%Y%m%d-%H%M%S.json")
        out_file.write_text(
            json.dumps(
                {
                    "label": opts.label,
                    "settings": {
                        "rounds": opts.rounds,
                        "seconds": opts.seconds,
                        "connections": opts.connections,
                        "gunicorn": gunicorn,
                        "products": PRODUCTS,
                        "service_env": extra,
                    },
                    "results": results,
                    "goals": [{"goal": label, "met": ok, "ratio": text} for label, ok, text in outcome],
                    "runs": runs,
                },
                indent=2,
            )
        )
        print(f"- results written to {out_file.relative_to(ROOT)}")
        complete = not (opts.quick or opts.only or opts.servers or opts.variant or opts.service_env)
        if opts.docs or (opts.docs is None and complete):
            command = " ".join(["bench/run.py", *sys.argv[1:]])
            publish(header, table_text, outcome, command, results, order)
        return 0 if errors == 0 else 1
    finally:
        for server in servers.values():
            server.stop()
        redis_server.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
