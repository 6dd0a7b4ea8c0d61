"""Run the project in other processes: free ports, a server environment, manage.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from django.conf import settings

BASE_DIR = Path(__file__).resolve().parents[3]


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(**overrides: str) -> dict[str, str]:
    """Return the environment for a server process that shares this run's Redis prefix."""
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
