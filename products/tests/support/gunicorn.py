"""A real gunicorn serving the project, as in production."""

from __future__ import annotations

import subprocess
import sys
import time

import requests

from .processes import BASE_DIR, free_port, server_env


class Gunicorn:
    """gunicorn on a spare port with the given environment; stopped by pid."""

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


def start_sqlite_gunicorn(db_path, workers: int = 3, threads: int = 1, **env: str) -> Gunicorn:
    """Migrate a fresh SQLite file and serve it with gunicorn."""
    environment = server_env(DATABASE_URL=f"sqlite:///{db_path}", **env)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=BASE_DIR,
        env=environment,
        check=True,
    )
    server = Gunicorn(environment, workers=workers, threads=threads)
    server.start()
    return server
