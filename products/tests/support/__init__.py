"""Helpers the tests share: processes they start (Redis, gunicorn, manage.py), users.

Fixtures stay in conftest.py; the classes and functions behind them live here,
one module per kind of helper, so a test imports what it uses by name.
"""
