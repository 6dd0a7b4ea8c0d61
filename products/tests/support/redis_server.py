"""A throwaway redis-server the tests may stop, pause and restart."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .processes import free_port


def answering(
    proc: subprocess.Popen, port: int, password: str | None = None, timeout: float = 10, **client_kwargs
) -> bool:
    """Wait until the redis-server ``proc`` answers on ``port``; False if it exits first.

    A server exits at once when its port (or a cluster node's bus port, +10000)
    was taken between free_port() and its start: the caller tries another
    port. The answer must carry ``proc``'s pid: whatever took the port may be
    another Redis. Each attempt is one command: redis-py's default retries
    would back off for seconds on every refused connection.
    """
    client = redis.Redis(
        host="127.0.0.1",  # not "localhost": a TLS certificate names the address
        port=port,
        password=password,
        socket_timeout=1,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 0),
        **client_kwargs,  # TLS: see redis_topologies.TLSFiles
    )
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            try:
                info = client.info()  # a sentinel's has no "loading"
                if info["process_id"] == proc.pid and not info.get("loading"):
                    return True
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server on port {port} did not answer within {timeout} s")
            time.sleep(0.02)
        return False
    finally:
        client.close()


class RedisProcess:
    """A private redis-server on a spare port, with its data in a temp dir."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="products-test-redis-")
        self.proc: subprocess.Popen | None = None
        self.started = False
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, *options: str) -> None:
        """Start the server (again, from its snapshot if there is one); ``options`` go to redis-server."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; the README's test command installs it")
        for _ in range(3):
            self._spawn(binary, options)
            if answering(self.proc, self.port):
                self.started = True
                return
            if self.started:  # a restart keeps its port: clients point there
                break
            self.port = free_port()  # taken since free_port() chose it
            self.url = f"redis://127.0.0.1:{self.port}/0"
        raise RuntimeError(f"redis-server on port {self.port} exited at start (code {self.proc.returncode})")

    def _spawn(self, binary: str, options: tuple[str, ...]) -> None:
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
                *options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

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
