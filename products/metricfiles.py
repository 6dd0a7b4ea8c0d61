"""A gunicorn worker's metric files after it died: folded into one file, never read half-way.

prometheus-client's multiprocess mode gives each worker its own files in
PROMETHEUS_MULTIPROC_DIR. Imports nothing of the project and creates no
metric, so the gunicorn master can call it without loading the app.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

# What a worker leaves that adds up: counters and histograms (its live gauges
# go with multiprocess.mark_process_dead).
_FOLDED_KINDS = ("counter", "histogram")


def fold_dead_worker(pid: int) -> None:
    """Add a dead worker's counts to the directory's ``<kind>_archive.db`` files, and remove its own.

    Each worker gunicorn replaces (``max_requests``) left two files that every
    scrape read, until gunicorn restarted. The gunicorn master calls this from
    ``child_exit``; a scrape holds the lock shared, so it never sees the counts
    both folded and in the worker's file, nor a file gone from under it.
    """
    from prometheus_client.mmap_dict import MmapedDict  # the file format prometheus-client writes (pinned)

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    with files_locked(directory, fcntl.LOCK_EX):
        for kind in _FOLDED_KINDS:
            dead = os.path.join(directory, f"{kind}_{pid}.db")
            if not os.path.exists(dead):
                continue
            archive = MmapedDict(os.path.join(directory, f"{kind}_archive.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(dead):
                    total, latest = archive.read_value(key)
                    archive.write_value(key, total + value, max(latest, timestamp))
            finally:
                archive.close()
            os.unlink(dead)


@contextmanager
def files_locked(directory: str, mode: int) -> Iterator[None]:
    """Hold the directory's lock: shared by scrapes, exclusive while a dead worker's files are folded."""
    with open(os.path.join(directory, ".fold.lock"), "a") as lock:
        fcntl.flock(lock, mode)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
