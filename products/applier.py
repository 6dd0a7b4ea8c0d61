"""The background thread that applies recorded invalidations in every server process.

Started by productsite/wsgi.py (gunicorn workers, runserver, any WSGI
server), never by one-shot commands. It runs once per process: a process
forked from one that runs it stops it before the fork, so the child inherits
no database connection in use, and both parent and child start their own. A
preloading gunicorn master, which serves nothing, stops its own for good
(gunicorn.conf.py); its workers start theirs.

Cost: one cheap query per ``PRODUCT_CACHE_OUTBOX_POLL`` seconds (1 s) while
nothing is pending: the server ledger's one row
(products.serverledger.recheck_if_moved) and whether the outbox holds any
row, together (before the process has adopted a Redis server: the outbox
alone). The outbox's rows are read only when there are some. While records wait for Redis it polls every
``PRODUCT_CACHE_OUTBOX_RETRY`` seconds (0.2 s) and tries Redis each time, so a
Redis that answers again is caught up within that, with no request needed.
"""

from __future__ import annotations

import logging
import os
import random
import threading

from django.conf import settings
from django.db import connections

from . import outbox, serverledger, token_cache, transport
from .dberrors import first_line

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_thread: threading.Thread | None = None
_stop: threading.Event | None = None
_pid: int | None = None
_fork_hooks_registered = False


def start_applier() -> None:
    """Start this process's applier thread unless it already runs (or is turned off)."""
    global _thread, _stop, _pid, _fork_hooks_registered
    if not settings.PRODUCT_CACHE_OUTBOX_APPLIER:
        return
    with _lock:
        if _thread is not None and _thread.is_alive() and _pid == os.getpid():
            return
        _stop = threading.Event()
        _pid = os.getpid()
        _thread = threading.Thread(
            target=_apply_forever, args=(_stop,), name="product-cache-outbox", daemon=True
        )
        _thread.start()
        if not _fork_hooks_registered:
            os.register_at_fork(
                before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork_in_child
            )
            _fork_hooks_registered = True


def stop_applier(timeout: float = 2.0) -> None:
    """Stop the applier thread (it closes its database connection) and wait for it."""
    global _thread
    thread, stop = _thread, _stop
    if thread is None or stop is None:
        return
    stop.set()
    if thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout)
    _thread = None


def applier_running() -> bool:
    return _thread is not None and _thread.is_alive() and _pid == os.getpid()


_was_running = False


def _before_fork() -> None:
    global _was_running
    _was_running = applier_running()
    if _was_running:
        stop_applier(timeout=1.0)


def _after_fork() -> None:
    if _was_running:
        start_applier()


def _after_fork_in_child() -> None:
    global _lock, _thread
    _lock = threading.Lock()  # another thread may have held it at the fork
    _thread = None
    _after_fork()


def _poll() -> tuple[int, int]:
    """Apply recorded invalidations, and check the server again if another process moved the ledger."""
    ledger = serverledger.read_watched_record(pending=outbox.any_pending())
    if not ledger or ledger[2]:  # not watching a server, no ledger row, or records waiting
        found, applied = outbox.apply_pending(retire_token_auth=token_cache.retire)
    else:
        found = applied = 0
    if ledger is not None:
        # Another process on another Redis server: check ours again.
        serverledger.recheck_if_moved(ledger[:2] or None)
    return found, applied


def _apply_forever(stop: threading.Event) -> None:
    serverledger.polled_in_pid = os.getpid()  # this process re-checks its server every poll
    idle = settings.PRODUCT_CACHE_OUTBOX_POLL
    # Start at a random point of the interval: the workers forked together
    # then poll spread out, and the first to see a record is sooner.
    delay = random.uniform(0, idle)
    failing = False
    try:
        while not stop.wait(delay):
            try:
                found, applied = _poll()
                transport.probe_if_down()
            except Exception as exc:
                if not failing:
                    logger.warning(
                        # The database's read, or Redis's delete: the error says which.
                        "Cannot apply recorded cache invalidations (%s: %s); trying again",
                        type(exc).__name__,
                        first_line(exc),
                    )
                failing = True
                connections.close_all()  # reconnect on the next poll
                delay = idle
                continue
            if failing:
                logger.warning("Applying recorded cache invalidations again")
                failing = False
            if found and applied == found:
                delay = 0  # maybe more rows behind this batch
            elif found:
                delay = settings.PRODUCT_CACHE_OUTBOX_RETRY  # Redis not answering yet
            else:
                delay = settings.PRODUCT_CACHE_OUTBOX_POLL
    finally:
        connections.close_all()
