"""Business actions on products, one module per capability.

Plain typed functions that views, admin and commands share: ``stock``,
``importing``, ``exporting``, ``warming`` and ``demo`` (demo data).
"""
