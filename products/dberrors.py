"""What a database error means, and a one-line account of it for messages and logs."""

from __future__ import annotations

# The WSGI environ key under which productsite.fastcreate hands Django a create
# whose INSERT already waited out another writer's lock (products.views raises
# it again rather than wait a second time, past gunicorn's worker timeout).
WRITE_LOCK_LOST = "products.write_lock_lost"

# PostgreSQL's deadlock and serialization failure: another writer won, found
# without waiting out the lock timeout.
_LOST_RACE_SQLSTATES = frozenset({"40P01", "40001"})
_LOCK_TIMEOUT_SQLSTATE = "55P03"  # lock_not_available


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc.__cause__, "sqlstate", None) or getattr(exc, "sqlstate", None)


def lost_to_another_writer(exc: BaseException) -> bool:
    """Return True when a database error means another transaction held the lock (not a database down)."""
    return _sqlstate(exc) in _LOST_RACE_SQLSTATES or waited_out_a_lock(exc)


def waited_out_a_lock(exc: BaseException) -> bool:
    """Return True when a database error came after waiting the whole lock timeout (not a deadlock or serialization failure)."""
    if _sqlstate(exc) == _LOCK_TIMEOUT_SQLSTATE:
        return True
    return "database is locked" in str(exc)  # SQLite, past its busy timeout


def duplicate_key(exc: BaseException) -> bool:
    """Return True when a unique constraint refused the write (another writer took the name meanwhile)."""
    if _sqlstate(exc) == "23505":  # unique_violation
        return True
    return str(exc).startswith("UNIQUE constraint failed")  # SQLite


# undefined_table, undefined_column: the schema is older than the code.
_SCHEMA_SQLSTATES = frozenset({"42P01", "42703"})


def schema_missing(exc: BaseException) -> bool:
    """Return True when a database error means the migrations were not applied (a table or column missing)."""
    if _sqlstate(exc) in _SCHEMA_SQLSTATES:
        return True
    text = str(exc)
    return text.startswith(("no such table:", "no such column:"))  # SQLite


def unusable_message(exc: BaseException, nothing_written: str = "") -> str:
    """The commands' one line for a database they cannot use (``nothing_written``: "; nothing was written")."""
    return (
        f"the database is not usable ({type(exc).__name__}: {first_line(exc)}){nothing_written}. "
        "Check DATABASE_URL and that the database is up, then run the command again."
    )


def first_line(exc: BaseException) -> str:
    """Return the first line of an error's message (PostgreSQL adds DETAIL and HINT lines), or its type's name.

    Log records and command errors stay one line, and the DETAIL line, which
    quotes the client's values, stays out of them.
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
