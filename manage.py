#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "productsite.settings")
    from django.core.management import execute_from_command_line

    from productsite.startup import apply_settings_options, exit_on_bad_settings

    apply_settings_options(sys.argv)
    # A setting the operator must fix (SECRET_KEY, DATABASE_URL, ...): one
    # line saying which, not a traceback through importlib.
    exit_on_bad_settings("manage.py", status=1)
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # Ctrl-C before a command took over (Django's start-up, the imports):
        # one line, as the product commands print for one during their work.
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    except Exception as exc:
        # Django's own commands (migrate, createsuperuser, ...) on a database
        # that cannot be reached: one line, as the product commands say it.
        # Any other error, or --traceback, keeps its traceback.
        from django.db import OperationalError

        if not isinstance(exc, OperationalError) or "--traceback" in sys.argv:
            raise
        from products.dberrors import unusable_message

        sys.stderr.write(f"CommandError: {unusable_message(exc)}\n")
        sys.exit(1)
