"""Run the project in other processes: free ports, a server environment, manage.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from django.conf import settings

BASE_DIR = Path(__file__).resolve().parents[3]


def free_port(cluster_bus: bool = False) -> int:
    """Return a free loopback port; for a cluster node, one whose bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not cluster_bus:
            return port
        if port + 10000 <= 65535:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no free port pair for a cluster node")


# What a process started from a test gets as DATABASE_URL unless the test names
# one: nowhere. Inherited, it would be the developer's db.sqlite3 on the SQLite
# pass, and on the PostgreSQL pass the database DATABASE_URL names (not the
# test database): data the tests did not create. A subprocess that needs a
# database gets its own (start_sqlite_gunicorn, the cli fixture, ...).
NO_DATABASE = "postgres://no-database-given@127.0.0.1:9/a-test-subprocess-needs-its-own-DATABASE_URL"


def server_env(**overrides: str) -> dict[str, str]:
    """Return the environment for a server process that shares this run's Redis prefix."""
    env = {
        **os.environ,
        "DATABASE_URL": NO_DATABASE,
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
    if env["REDIS_URL"] == settings.SHARED_REDIS_URL and "REDIS_SOCKET_TIMEOUT" not in overrides:
        # The run's shared Redis: as patient as in this process (test_settings.py).
        env["REDIS_SOCKET_TIMEOUT"] = str(settings.SHARED_REDIS_SOCKET_TIMEOUT)
    return env


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


def migrate(env: dict[str, str]) -> None:
    """Run ``manage.py migrate`` on the database ``env`` names; fail the test with its output if it fails."""
    done = manage(env, "migrate", "-v", "0")
    assert done.returncode == 0, f"migrate failed:\n{done.stdout}{done.stderr}"


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


def opened(pid: int) -> set[str]:
    """Return what a process holds open: file paths, and "tcp:<port>" for each TCP connection's far end."""
    remote_port = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port[f"socket:[{fields[9]}]"] = int(fields[2].rsplit(":", 1)[1], 16)
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        held.add(f"tcp:{remote_port[target]}" if target in remote_port else target)
    return held


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
