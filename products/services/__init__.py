"""Business actions on products, one module per capability.

Plain typed functions that views, admin and commands share: ``stock``,
``importing``, ``exporting``, ``warming`` and ``demo`` (demo data);
``seen_names`` is the import's record of the names a file already named.
"""

from collections.abc import Callable

# Called now and then with how many rows or names are done so far.
ProgressCallback = Callable[[int], None]
