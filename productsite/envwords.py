"""The words a yes/no environment variable takes, for the app's settings and gunicorn.conf.py alike.

A blank value counts as unset in both (the default applies): a compose file
passing ``${PRODUCT_CACHE_ENABLED}`` through while it is unset must not turn
the cache off.
"""

TRUE_WORDS = frozenset(("1", "true", "yes", "y", "on", "ok"))
FALSE_WORDS = frozenset(("0", "false", "no", "n", "off"))
