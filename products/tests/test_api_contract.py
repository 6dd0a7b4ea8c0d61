"""Contract fuzzing: schemathesis against the live service, from its own schema.

Bounded and reproducible: 10 examples per operation, deterministic
generation, every check on (products/tests/schemathesis.toml states the two
widened expectations and why). Runs against gunicorn with two workers on a
fresh SQLite file, with an editor's token so writes are exercised too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .support.processes import manage

# Every server and command here gets a database of its own (or none): the
# PostgreSQL pass of scripts/test.sh leaves these tests to the SQLite pass.
pytestmark = pytest.mark.database_independent

HERE = Path(__file__).resolve().parent

CREATE_EDITOR = """
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
user = User.objects.create_user("fuzz-editor", password="unused-pw-123")
user.user_permissions.set(Permission.objects.filter(
    codename__in=["add_product", "change_product", "delete_product"]))
print(Token.objects.create(user=user).key)
"""


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(sqlite_gunicorn, tmp_path):
    server = sqlite_gunicorn(workers=2, threads=2)
    created = manage(server.env, "shell", "-c", CREATE_EDITOR)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(HERE / "schemathesis.toml"),
            "run",
            f"{server.url}/api/schema/",
            "--checks",
            "all",
            "--max-examples",
            "10",
            "--generation-deterministic",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--header",
            f"Authorization: Token {token}",
            "--no-color",
        ],
        # Its cache and reports go to a temp dir, not the repository.
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        # Number prices rounded to cents (what JSON Schema cannot say; see the module).
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HERE / "schemathesis_hooks.py")},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "No issues found" in output, output[-6000:]
    # The run really covered every operation, and the token's writes went through.
    assert "Operations:       10 selected / 10 total" in output, output[-3000:]
    count = manage(
        server.env, "shell", "-c", "from products.models import Product; print(Product.objects.count())"
    )
    assert int(count.stdout.split()[-1]) > 0, count.stdout + count.stderr
