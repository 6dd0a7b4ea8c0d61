"""Shared fixtures: real Redis, real database, real servers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from products import cache as product_cache
from products import counters, nearcache
from products.models import Product

BASE_DIR = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reset_breaker() -> None:
    """Forget any outage this process saw (tests start from a healthy cache)."""
    product_cache.reset()
    nearcache.reset()  # its tracked connection may lead to another test's Redis
    counters.reset()  # throttle reservations of earlier tests


@pytest.fixture(autouse=True)
def _fresh_product_cache():
    """Every test starts with no cached products of this run and a closed breaker."""
    reset_breaker()
    try:
        product_cache.clear()
    except product_cache.CacheUnavailable:
        pass
    reset_breaker()
    yield
    reset_breaker()


@pytest.fixture(scope="session", autouse=True)
def _forget_run_keys_at_end():
    """Delete this run's keys (its own prefix) when the session ends."""
    yield
    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start : start + 1000])


# --- Users and clients ---------------------------------------------------------


def _user(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw-" + username)
    if codenames:
        user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def editor(db) -> User:
    """A user allowed to add, change and delete products."""
    return _user("editor", "add_product", "change_product", "delete_product")


@pytest.fixture
def plain_user(db) -> User:
    """An authenticated user with no product permissions."""
    return _user("plain")


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


def token_client(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def editor_client(editor) -> APIClient:
    return token_client(editor)


@pytest.fixture
def plain_client(plain_user) -> APIClient:
    return token_client(plain_user)


@pytest.fixture
def editor_token(editor) -> str:
    return Token.objects.get_or_create(user=editor)[0].key


@pytest.fixture
def make_product(db):
    def make(name: str = "Widget", price: str = "19.99", quantity: int = 5) -> Product:
        return Product.objects.create(name=name, price=price, quantity=quantity)

    return make


# --- A throwaway redis-server the tests may stop, pause and restart ------------


class RedisProcess:
    """A private redis-server on a spare port, with its data in a temp dir."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="products-test-redis-")
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; the README's test command installs it")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dbfilename",
                "dump.rdb",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections hang, nothing answers."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self, save: bool = False) -> None:
        """Kill the server; with save=True its data is on disk for a restart."""
        if save:
            self.client().save()
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.resume()
            self.proc.kill()
            self.proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def private_redis(redis_process, settings) -> Iterator[RedisProcess]:
    """Point the Django cache at a throwaway redis-server for this test."""
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "LOCATION": redis_process.url}
    settings.CACHES = caches
    settings.REDIS_URL = redis_process.url
    reset_breaker()
    yield redis_process
    reset_breaker()


# --- A real gunicorn, as in production ---------------------------------------------


class Gunicorn:
    def __init__(self, env: dict[str, str], workers: int = 2, threads: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.workers = workers
        self.threads = threads
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "productsite.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "--threads",
                str(self.threads),
                "--log-level",
                "warning",
                "--access-logfile",
                "/dev/null",
            ],
            cwd=BASE_DIR,
            env=self.env,
        )
        import requests

        for _ in range(300):
            try:
                if requests.get(self.url + "/health/", timeout=1).status_code in (200, 503):
                    return
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("gunicorn did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def server_env(**overrides: str) -> dict[str, str]:
    """Environment for a server process that shares this run's Redis prefix."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "productsite.settings",
        "ENV_FILE": "/nonexistent/.env",  # a developer's local .env must not leak in
        "SECRET_KEY": "insecure-key-for-tests-only",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "REDIS_URL": settings.REDIS_URL,
        "CACHE_KEY_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],
        "THROTTLE_ANON_RATE": "100000/minute",
        "THROTTLE_USER_RATE": "100000/minute",
        "LOG_LEVEL": "WARNING",
    }
    env.update(overrides)
    return env


@pytest.fixture
def sqlite_gunicorn(tmp_path) -> Iterator[callable]:
    """Start gunicorn on a fresh, migrated SQLite file; yields a starter."""
    started: list[Gunicorn] = []

    def start(workers: int = 3, threads: int = 1, **env: str) -> Gunicorn:
        db_url = f"sqlite:///{tmp_path / 'served.sqlite3'}"
        environment = server_env(DATABASE_URL=db_url, **env)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v", "0"],
            cwd=BASE_DIR,
            env=environment,
            check=True,
        )
        server = Gunicorn(environment, workers=workers, threads=threads)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def child_pids(pid: int) -> list[int]:
    """Return the pids of a process's children (a gunicorn master's workers)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces; the fields after it do not.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry))
    return sorted(children)


def connection_owner(pids: list[int], server_port: int, client_port: int) -> int | None:
    """Return which of ``pids`` holds the server end of the TCP connection from ``client_port``."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if local == server_port and remote == client_port:
            inode = fields[9]
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def manage(env: dict[str, str], *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    """Run manage.py in a subprocess with the given environment."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        input=input,
        capture_output=True,
        text=True,
    )


# --- Reports for fixtures (the browser tests save artifacts on failure) ------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (item.rep_setup, rep_call, rep_teardown)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
