"""Refuse to start on a setting the operator must fix, saying which in one line."""

import sys

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def exit_on_bad_settings(prog: str = "productsite", status: int = 4) -> None:
    """Load the settings module; on ImproperlyConfigured print its message and exit ``status``.

    Status 4 is what gunicorn's arbiter reads as "application failed to load"
    (it stops instead of restarting workers forever); manage.py passes 1.
    """
    try:
        settings.INSTALLED_APPS  # noqa: B018  (loads the settings module)
    except ImproperlyConfigured as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(status) from None
