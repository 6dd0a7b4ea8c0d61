"""A real gunicorn serving the project, as in production."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import requests

from .processes import BASE_DIR, free_port, migrate, server_env


class Gunicorn:
    """gunicorn on a spare port with the given environment; stopped by pid.

    It reads the project's gunicorn.conf.py, as deployed. ``threads=None``
    leaves the thread count to it; ``quiet`` logs warnings only, without
    access lines; ``output`` is a file for gunicorn's stdout and stderr.
    It has started when ``ready`` answers, whatever the status.
    """

    def __init__(
        self,
        env: dict[str, str],
        workers: int = 2,
        threads: int | None = 1,
        *,
        quiet: bool = True,
        output: Path | None = None,
        ready: str = "/health/",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.workers = workers
        self.threads = threads
        self.quiet = quiet
        self.output = output
        self.ready = ready
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start gunicorn and wait until it answers; a port taken since free_port() chose it moves the server."""
        for _ in range(3):
            self._spawn()
            if self._answering():
                return
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
        output = f":\n{self.output.read_text(errors='replace')[-3000:]}" if self.output else ""
        raise RuntimeError(f"gunicorn exited at start (code {self.proc.returncode}){output}")

    def _spawn(self) -> None:
        command = [sys.executable, "-m", "gunicorn", "productsite.wsgi:application"]
        command += ["--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers)]
        if self.threads is not None:
            command += ["--threads", str(self.threads)]
        if self.quiet:
            command += ["--log-level", "warning", "--access-logfile", "/dev/null"]
        output = self.output.open("ab") if self.output else None
        try:
            self.proc = subprocess.Popen(
                command,
                cwd=BASE_DIR,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
            )
        finally:
            if output:
                output.close()

    def _answering(self) -> bool:
        """Wait for ``ready`` to answer; False if gunicorn exits first."""
        deadline = time.monotonic() + 30
        while self.proc.poll() is None:
            try:
                requests.get(self.url + self.ready, timeout=1)
                return True
            except requests.RequestException:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("gunicorn did not answer within 30 s") from None
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_sqlite_gunicorn(
    db_path, workers: int = 3, threads: int = 1, output: Path | None = None, **env: str
) -> Gunicorn:
    """Migrate a fresh SQLite file and serve it with gunicorn (its stdout and stderr to ``output``)."""
    environment = server_env(DATABASE_URL=f"sqlite:///{db_path}", **env)
    migrate(environment)
    server = Gunicorn(environment, workers=workers, threads=threads, output=output)
    server.start()
    return server
