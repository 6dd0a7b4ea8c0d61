"""What a database error means, and a one-line account of it for messages and logs."""

from __future__ import annotations

# The WSGI environ key under which productsite.fastcreate hands Django a create
# whose INSERT already waited out another writer's lock (products.views raises
# it again rather than wait a second time, past gunicorn's worker timeout).
WRITE_LOCK_LOST = "products.write_lock_lost"

# PostgreSQL's deadlock, serialization failure and lock timeout (lock_not_available).
_LOCK_SQLSTATES = frozenset({"40P01", "40001", "55P03"})


def lost_to_another_writer(exc: BaseException) -> bool:
    """Whether a database error means another transaction held the lock (not a database down)."""
    if (
        getattr(exc.__cause__, "sqlstate", None) in _LOCK_SQLSTATES
        or getattr(exc, "sqlstate", None) in _LOCK_SQLSTATES
    ):
        return True
    return "database is locked" in str(exc)  # SQLite, past its busy timeout


def waited_out_a_lock(exc: BaseException) -> bool:
    """Whether a database error came after waiting the whole lock timeout (not a deadlock or serialization failure)."""
    if getattr(exc.__cause__, "sqlstate", None) == "55P03" or getattr(exc, "sqlstate", None) == "55P03":
        return True
    return "database is locked" in str(exc)  # SQLite, past its busy timeout


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (PostgreSQL adds DETAIL and HINT lines), or its type's name.

    Log records and command errors stay one line, and the DETAIL line, which
    quotes the client's values, stays out of them.
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
