"""The transactional outbox of cache invalidations that could not reach Redis.

A write whose invalidation fails (Redis down, hung, or unreachable from the
writer's process only, e.g. a wrong ``REDIS_URL`` in an operator's shell)
records the names in the database, so the miss outlives the process that made
it: a gunicorn worker killed or recycled, ``manage.py shell``, an import.

* **Recording.** :func:`record_missed_invalidation` is the cache's miss hook
  (``missed.add_hook``, wired in apps.ready()). Inside a
  transaction the row joins it (a savepoint, so a failed insert never breaks
  the write), and commits or rolls back with the write; after the commit it
  is its own single INSERT. With Redis up nothing is recorded: a write costs
  no extra query.
* **Applying.** Every server process runs :mod:`products.applier`, which calls
  :func:`apply_pending`: one indexed query for the oldest rows, and when
  there are any and Redis answers, one invalidation (or a generation
  retirement past :data:`INVALIDATE_BY_NAME_LIMIT` names) and one DELETE.
  Applying a row twice, from several processes, only deletes keys twice.
* **Saying so.** A data command reports each recorded miss on its stderr
  (:func:`report_misses_to`); elsewhere (a worker, ``manage.py shell``) it is a
  warning in the log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from django.db import DatabaseError, router, transaction
from django.db.models import Exists
from django.utils import timezone

from . import cache
from .logfields import AtMostEvery, escape
from .missed import INVALIDATE_BY_NAME_LIMIT
from .models import PendingInvalidation

logger = logging.getLogger(__name__)

# Past missed.INVALIDATE_BY_NAME_LIMIT names a record (or a batch being
# applied) retires the whole generation instead: one small row, one command.
# Rows read per poll; more are picked up at once by the next poll.
APPLY_BATCH = 200
# Names shown in a message before "and N more".
_SHOWN = 10

_local = threading.local()
# In the log (a server process, a shell, migrate), a few recorded misses a
# minute: during an outage every write records one, and each request is to
# stay one log line. A data command reports every one on its stderr instead.
_miss_news = AtMostEvery(60.0, times=5)


def describe(names: frozenset[str] | None) -> str:
    """Return "every cached product" or a short list of the names."""
    if names is None:
        return "every cached product"
    shown = sorted(names)[:_SHOWN]
    text = ", ".join(escape(name) for name in shown)  # a name is a client's text: it goes into the log
    if len(names) > len(shown):
        text += f" and {len(names) - len(shown):,} more"
    return f"{len(names):,} cached product(s) ({text})"


def miss_message(names: frozenset[str] | None) -> str:
    return (
        f"Could not reach Redis to invalidate {describe(names)}; recorded in the database, "
        "the running service applies it within about 1 s of reaching Redis."
    )


@contextmanager
def report_misses_to(write: Callable[[str], None]) -> Iterator[None]:
    """Send this thread's recorded misses to ``write`` (a command's stderr) instead of the log."""
    previous = getattr(_local, "report", None)
    _local.report = write
    try:
        yield
    finally:
        _local.report = previous


def record_missed_invalidation(names: frozenset[str] | None) -> None:
    """Store an invalidation that could not be delivered (None: every product)."""
    retire_all = names is None or len(names) > INVALIDATE_BY_NAME_LIMIT
    row = PendingInvalidation(names=[] if retire_all else sorted(names), retire_all=retire_all)
    _record(row, describe(names), miss_message(names))


TOKEN_MISS_MESSAGE = (
    "Could not reach Redis to forget cached token authentications; recorded in the database, "
    "the running service applies it within about 1 s of reaching Redis."
)


def record_missed_token_invalidation() -> None:
    """Store a change to tokens, users or permissions that products.token_cache could not deliver."""
    _record(PendingInvalidation(token_auth=True), "cached token authentications", TOKEN_MISS_MESSAGE)


def _record(row: PendingInvalidation, what: str, message: str) -> None:
    using = router.db_for_write(PendingInvalidation)
    try:
        if transaction.get_connection(using).in_atomic_block:
            # A savepoint: a failed insert (the table not migrated yet) must
            # not abort the writer's transaction.
            with transaction.atomic(using=using):
                row.save(using=using, force_insert=True)
        else:
            row.save(using=using, force_insert=True)
    except DatabaseError:
        logger.exception("Could not record a missed invalidation of %s", what)
        return
    report = getattr(_local, "report", None)
    if report is not None:
        report(message)
        return
    unsaid = _miss_news.next_warning()
    if unsaid is None:
        return
    more = f" ({unsaid} more recorded since the last such line)" if unsaid else ""
    logger.warning(message + more)


def reset() -> None:
    """Make the next recorded miss's warning due at once (tests); it still counts those held back."""
    _miss_news.reset()


def apply_pending(
    limit: int = APPLY_BATCH, using: str | None = None, retire_token_auth: Callable[[], bool] | None = None
) -> tuple[int, int]:
    """Deliver the oldest recorded invalidations; return (rows found, rows applied).

    ``retire_token_auth`` delivers a token-authentication row
    (products.token_cache.retire; the applier passes it).
    """
    using = using or router.db_for_write(PendingInvalidation)
    rows = list(
        PendingInvalidation.objects.using(using)
        .order_by("pk")
        .values_list("pk", "names", "retire_all", "token_auth")[:limit]
    )
    if not rows:
        return 0, 0
    products = [row for row in rows if not row[3]]
    names = _union(row[1] for row in products)
    delivered = True
    if any(row[2] for row in products) or len(names) > INVALIDATE_BY_NAME_LIMIT:
        delivered = cache.retire_generation(record_miss=False)
    elif products:
        delivered = cache.invalidate(names, record_miss=False)
    if delivered and len(products) < len(rows):
        delivered = retire_token_auth is not None and retire_token_auth()
    if not delivered:
        return len(rows), 0
    PendingInvalidation.objects.using(using).filter(pk__in=[row[0] for row in rows]).delete()
    logger.info("Applied %d recorded cache invalidation(s)", len(rows))
    return len(rows), len(rows)


def any_pending() -> Exists:
    """Return an expression that says whether any invalidation is recorded (for the applier's one poll query)."""
    return Exists(PendingInvalidation.objects.all())


def pending_summary(using: str | None = None) -> tuple[int, float | None]:
    """Return how many invalidations wait for Redis, and the age in seconds of the oldest."""
    rows = PendingInvalidation.objects.using(using or router.db_for_read(PendingInvalidation))
    oldest = rows.order_by("created_at").values_list("created_at", flat=True).first()
    return rows.count(), None if oldest is None else (timezone.now() - oldest).total_seconds()


def _union(lists: Iterable[list[str]]) -> set[str]:
    names: set[str] = set()
    for part in lists:
        names.update(part)
    return names
