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
