"""The admin's History for changes made many products at a time (an action, the CSV import).

A save in the change form writes one ``LogEntry``; "Mark out of stock" and
the import write one per product they changed, in chunks (under every
database's parameter limit), up to ``HISTORY_LIMIT`` products. Past it, none:
a select-all over a large catalogue would otherwise spend longer writing
History than changing the products (and time out), so the message says so.
"""

from __future__ import annotations

from django.contrib.admin.models import LogEntry
from django.http import HttpRequest

from .models import Product

HISTORY_LIMIT = 1000  # products per action or import that get a History entry
_CHUNK = 500


def log_history(request: HttpRequest, pks: list[int], action_flag: int, message) -> None:
    """Write one History entry per product in ``pks`` (at most HISTORY_LIMIT are expected)."""
    for start in range(0, len(pks), _CHUNK):
        LogEntry.objects.log_actions(
            user_id=request.user.pk,
            queryset=Product.objects.filter(pk__in=pks[start : start + _CHUNK]),
            action_flag=action_flag,
            change_message=message,
        )
