"""gunicorn's access log with every field escaped (when GUNICORN_ACCESS_LOG turns it on).

gunicorn only escapes double quotes; a path with ``%0a`` would otherwise
write a second, forged line. The same escaping as the app's request log.
"""

from __future__ import annotations

from gunicorn.glogging import Logger, SafeAtoms

from products.logfields import escape


class EscapedAtoms(SafeAtoms):
    """SafeAtoms whose string values have control and non-printable characters escaped."""

    def __init__(self, atoms: dict) -> None:
        super().__init__(
            {key: escape(value) if isinstance(value, str) else value for key, value in atoms.items()}
        )


class EscapingLogger(Logger):
    atoms_wrapper_class = EscapedAtoms
