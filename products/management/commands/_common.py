"""Helpers shared by the product commands: progress display and messages.

Modules whose name starts with an underscore are not commands.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, OutputWrapper
from django.db import DatabaseError, connection
from redis.exceptions import RedisError
from tqdm import tqdm

from products import transport
from products.dberrors import first_line, lost_to_another_writer, schema_missing, unusable_message
from products.models import CacheServer
from products.outbox import report_misses_to

# The shell's exit status for a process stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130


class OutputLost(Exception):
    """Standard output could not be written (a full disk, a closed stream, a reader gone)."""

    def __init__(self, reason: str, reader_gone: bool = False) -> None:
        super().__init__(reason)
        self.reader_gone = reader_gone


class _Output(OutputWrapper):
    """The command's standard output: a failed write raises :class:`OutputLost` instead of the stream's error."""

    def write(self, msg="", style_func=None, ending=None):
        if self._out is None:  # started with standard output closed
            raise OutputLost("it is closed")
        try:
            super().write(msg, style_func, ending)
        except BrokenPipeError:
            raise OutputLost("the reader went away", reader_gone=True) from None
        except (OSError, ValueError) as exc:  # ValueError: a stream closed meanwhile
            raise OutputLost(getattr(exc, "strerror", None) or str(exc)) from None


class _IgnoredCleanupErrors(logging.Filter):
    """Drop psycopg's "error ignored ..." notes: a failure while it cleaned up after another error.

    Ctrl-C inside a pipeline (an import's batches on PostgreSQL) made it warn
    "error ignored terminating <psycopg.Pipeline ...>: pipeline aborted" on
    the way out; the command reports the first error, in one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error ignored")


# psycopg's loggers that report such errors (its pipeline, copy, connection; its transactions).
_CLEANUP_LOGGERS = ("psycopg", "psycopg.transaction")


@contextmanager
def _filtered(log_filter: logging.Filter, *logger_names: str):
    """Apply ``log_filter`` to the named loggers while the block runs."""
    for name in logger_names:
        logging.getLogger(name).addFilter(log_filter)
    try:
        yield
    finally:
        for name in logger_names:
            logging.getLogger(name).removeFilter(log_filter)


class _OutageNews(logging.Filter):
    """Drop the transport's "Redis unavailable ..." and "... answering again" lines (a server's news).

    A cache command that meets an outage ends with a CommandError that says
    so, with the reason: the log line before it ("products are read from the
    database, and Redis is tried again every 1.0s") said it twice, and
    spoke of requests the command does not serve.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Redis unavailable", "Redis is answering again"))


class ProductCommand(BaseCommand):
    """Base of the product commands: a database that is down or not migrated is one line, not a traceback.

    So is Ctrl-C: one line saying what was left (``interrupted``), exit status 130;
    and standard output that cannot be written: one line saying what stands
    (``output_lost``), exit status 1.
    """

    interrupted = "Interrupted."
    output_lost = "what the command did before this point stands"
    # Said after a database error; empty for a command that only reads.
    nothing_written = "; nothing was written"
    # A cache command: an outage ends it with a CommandError that says so
    # (redis_down_message), so the transport's own line about it is not logged.
    says_redis_outage = False

    def __init__(self, stdout=None, stderr=None, no_color=False, force_color=False):
        super().__init__(stdout, stderr, no_color, force_color)
        self.stdout = _Output(self.stdout._out)

    def execute(self, *args, **options):
        try:
            # psycopg's notes come while the error unwinds through here.
            outage_news = ("products.transport",) if self.says_redis_outage else ()
            with (
                _filtered(_IgnoredCleanupErrors(), *_CLEANUP_LOGGERS),
                _filtered(_OutageNews(), *outage_news),
            ):
                return self._execute(*args, **options)
        except KeyboardInterrupt:
            # Whatever was written runs in a transaction that has rolled back
            # by now (Django's atomic() rolls back on any exception).
            self.stderr.write(self.style.ERROR(self.interrupted))
            raise SystemExit(EXIT_INTERRUPTED) from None
        except OutputLost as exc:
            if exc.reader_gone:
                # The reader went away (e.g. "| head"): stop quietly, as cat does,
                # with nothing left for Python to flush into the closed pipe.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise SystemExit(1) from None
            raise CommandError(f"could not write to standard output ({exc}); {self.output_lost}") from None

    def _execute(self, *args, **options):
        try:
            # The database first: the cache's first Redis connection reads
            # it too (products.serverledger), and would otherwise report a
            # missing table as Redis not answering.
            CacheServer.objects.exists()
            return super().execute(*args, **options)
        except (DatabaseError, connection.Database.Error) as exc:  # the latter: the driver's, unwrapped
            # Whatever was written runs in a transaction that has rolled back.
            first = first_line(exc)
            if lost_to_another_writer(exc):
                raise CommandError(
                    f"the database is busy ({type(exc).__name__}: {first}): another process holds "
                    "the lock (an import?); nothing was written, run the command again"
                ) from None
            if schema_missing(exc):
                raise CommandError(
                    f"the database has no tables for this version ({type(exc).__name__}: {first}): "
                    "run `manage.py migrate` first"
                ) from None
            raise CommandError(unusable_message(exc, self.nothing_written)) from None


class HeldInterrupt:
    """Hold Ctrl-C while entered: what it interrupts (a commit and its cache invalidation) finishes first.

    ``caught`` then says whether Ctrl-C came meanwhile; the command reports
    what was done and exits as interrupted. Off the main thread, where
    Python cannot set a signal handler, it holds nothing.
    """

    def __init__(self) -> None:
        self.caught = False
        self._previous = None

    def _catch(self, signum, frame) -> None:
        self.caught = True

    def __enter__(self) -> HeldInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._catch)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def exit_if_caught(self, stderr: OutputWrapper, message: str) -> None:
        """After the command's own report: one line saying the interrupt came too late, exit 130."""
        if self.caught:
            stderr.write(message)
            raise SystemExit(EXIT_INTERRUPTED)


class UncheckedCommand(ProductCommand):
    """A product command that skips the system checks, except the Redis configuration's.

    The checks (URL conf, templates, ...) concern the web server, not the
    data, and cost start-up time and memory (docs/performance.md). A bad
    Redis setting is still refused: the settings fall back to a default
    Redis for the checks to report, and a command writing products while
    invalidating in that other Redis would leave the service's cache stale.
    """

    requires_system_checks: list = []

    def execute(self, *args, **options):
        problems = settings.REDIS_TOPOLOGY.problems
        if problems:
            raise CommandError(" ".join(f"{problem.id}: {problem.msg}" for problem in problems))
        return super().execute(*args, **options)


class DataCommand(UncheckedCommand):
    """A command that works on product data: it reports invalidations Redis did not take."""

    def execute(self, *args, **options):
        # A write whose invalidation could not reach Redis says so here, once
        # per record, with the names; the exit code still says the data was written.
        with report_misses_to(lambda message: self.stderr.write(self.style.WARNING(message))):
            return super().execute(*args, **options)


class Progress:
    """A tqdm bar on stderr when it is a terminal; silent when piped or captured.

    Use ``update(n)`` as a service's ``on_progress`` and ``write(message)`` for
    lines that must not tear the bar.
    """

    def __init__(
        self, stderr: OutputWrapper, *, total: int | None = None, unit: str = " rows", enabled: bool = True
    ) -> None:
        self._stderr = stderr
        self._bar = None
        if enabled and stderr.isatty():
            # tqdm needs the raw stream: OutputWrapper appends a newline to
            # every write, which would break the bar's carriage returns.
            # A terminal that reports 0 x 0 (a pseudo-terminal opened with no
            # window size: `script` or pty.openpty() in CI) is drawn at a fixed
            # 80 x 24: tqdm left to measure it would take 0 x 0 and draw nothing.
            size = {"dynamic_ncols": True} if _terminal_size_known() else {"ncols": 80, "nrows": 24}
            self._bar = tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr, leave=False, **size)

    def update(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def write(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            self._stderr.write(message)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _terminal_size_known() -> bool:
    """Return whether standard error is a terminal that reports a size (not 0 rows or 0 columns)."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):  # no file descriptor (a captured stream), or not a terminal
        return False
    return size.columns > 0 and size.lines > 0


def redis_location() -> str:
    """Return where Redis is expected and which variable says so, without any password."""
    topology = settings.REDIS_TOPOLOGY
    if topology.kind != "single":
        return topology.describe()  # Sentinel or Cluster: the nodes and the variable
    parts = urlsplit(settings.REDIS_URL)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379} (REDIS_URL)"


def rate(per_second: float) -> str:
    """Format a rate for a summary: whole numbers with commas; two digits below 10 (a slow run is not "0 rows/s")."""
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.2g}"


def redis_down_message(what: str, error: Exception | None = None) -> str:
    """Say that Redis could not be used, why (a refused connection, a wrong password...), and what was done."""
    # The RedisError behind it (or behind the open breaker), in the log's one
    # line: redis-py's Sentinel errors carry every sentinel client's repr (kilobytes).
    cause = error
    while cause is not None and not isinstance(cause, RedisError):
        cause = cause.__cause__  # a warm-up stopped by CacheUnavailable from a RedisError
    if cause is None and error is not None:
        cause = transport.last_failure()  # "circuit open": an earlier call failed
    reason = (transport.describe(cause) if cause is not None else str(error or "")).strip().rstrip(".")
    return (
        f"Redis at {redis_location()} is unavailable"
        + (" (every master must answer)" if transport.configured_for_cluster() else "")
        + (f" ({reason})" if reason and reason != "circuit open" else "")
        + f"; {what}. "
        "Start Redis or fix that setting, then run the command again."
    )
