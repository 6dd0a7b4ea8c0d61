"""The layering holds: import-linter's contracts in setup.cfg ([importlinter]).

Layers import downward only (deployment > views/admin/commands > services >
domain > rules > cache), the cache imports nothing from the domain, and no
module of the app takes part in an import cycle.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .support.processes import BASE_DIR

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
    )


def test_the_import_contracts_are_kept():
    result = lint_imports(BASE_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_a_cache_module_importing_the_domain_breaks_every_contract(tmp_path):
    # The same contracts on a copy of the code where the cache imports a view:
    # an upward import, a domain import and a cycle at once.
    shutil.copy(BASE_DIR / "setup.cfg", tmp_path)
    ignore = shutil.ignore_patterns("tests", "__pycache__", "migrations")
    for package in ("products", "productsite"):
        shutil.copytree(BASE_DIR / package, tmp_path / package, ignore=ignore)
    cache = tmp_path / "products" / "cache.py"
    if not cache.exists():  # a package after the split
        cache = tmp_path / "products" / "cache" / "__init__.py"
    cache.write_text(cache.read_text() + "\nfrom products import views  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "0 kept, 3 broken" in result.stdout, result.stdout
