"""Refuse to start on a setting the operator must fix, saying which in one line."""

import os
import re
import sys

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError, CommandParser, handle_default_options


def apply_settings_options(argv: list[str]) -> None:
    """Honour ``--settings`` and ``--pythonpath`` before the settings load, as Django's own utility does.

    ``exit_on_bad_settings`` loads the settings before Django parses the
    command line; without this, ``manage.py migrate --settings=X`` would run
    on the default settings (and their database).
    """
    parser = CommandParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--settings")
    parser.add_argument("--pythonpath")
    parser.add_argument("args", nargs="*")
    try:
        options, _ = parser.parse_known_args(argv[2:])
    except CommandError:
        return  # Django reports the bad command line itself
    handle_default_options(options)


def exit_on_bad_settings(prog: str = "productsite", status: int = 4) -> None:
    """Load the settings module; on ImproperlyConfigured print its message and exit ``status``.

    Status 4 is what gunicorn's arbiter reads as "application failed to load"
    (it stops instead of restarting workers forever); manage.py passes 1.
    """
    module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module):
        # ".settings" made importlib raise a TypeError (a relative import).
        print(
            f"{prog}: configuration error: {module!r} is not a module name (DJANGO_SETTINGS_MODULE or --settings).",
            file=sys.stderr,
        )
        raise SystemExit(status)
    try:
        settings.INSTALLED_APPS  # noqa: B018  (loads the settings module)
    except ImproperlyConfigured as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(status) from None
    except ModuleNotFoundError as exc:
        if not exc.name or not (module == exc.name or module.startswith(exc.name + ".")):
            raise  # a module the settings import is missing: the traceback says which
        print(
            f"{prog}: configuration error: cannot import the settings module {module!r} "
            "(DJANGO_SETTINGS_MODULE or --settings); check its name and --pythonpath.",
            file=sys.stderr,
        )
        raise SystemExit(status) from None
