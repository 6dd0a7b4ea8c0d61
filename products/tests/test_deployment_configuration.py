"""Settings come from the environment, with safe defaults."""

import json
import os
import subprocess
import sys

import pytest

from .support.processes import BASE_DIR

PRINT_SETTINGS = (
    "import json; from django.conf import settings as s; "
    "print(json.dumps({'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS, 'engine': s.DATABASES['default']['ENGINE'], "
    "'name': str(s.DATABASES['default']['NAME']), 'conn_max_age': s.DATABASES['default']['CONN_MAX_AGE'], "
    "'redis': s.CACHES['default']['LOCATION'], 'timeout': s.PRODUCT_CACHE_TIMEOUT, "
    "'options': s.DATABASES['default'].get('OPTIONS', {}), 'fallbacks': s.SECRET_KEY_FALLBACKS, "
    "'prefix': s.CACHES['default']['KEY_PREFIX']}))"
)


def run_settings(env_file: str = "/nonexistent/.env", **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DEBUG",
            "SECRET_KEY",
            "SECRET_KEY_FALLBACKS",
            "DATABASE_URL",
            "REDIS_URL",
            "ALLOWED_HOSTS",
            "PRODUCT_CACHE_TIMEOUT",
            "CACHE_KEY_PREFIX",
        }
    }
    # ENV_FILE: ignore a developer's local .env, so the defaults show.
    clean.update(env, DJANGO_SETTINGS_MODULE="productsite.settings", ENV_FILE=env_file)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + PRINT_SETTINGS],
        cwd=BASE_DIR,
        env=clean,
        capture_output=True,
        text=True,
    )


def test_secret_key_is_required_when_debug_is_off():
    result = run_settings()
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


@pytest.mark.parametrize("blank", ["", " "])
def test_a_blank_exported_secret_key_counts_as_unset(tmp_path, blank):
    env_file = tmp_path / ".env"
    env_file.write_text("SECRET_KEY=" + "k" * 50 + "\n")
    result = run_settings(env_file=str(env_file), SECRET_KEY=blank)
    assert result.returncode == 0, result.stderr
    # Without a key in .env, blank is "not set" (not a one-space key).
    result = run_settings(SECRET_KEY=blank)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


@pytest.mark.parametrize("form", ["separate", "joined"])
def test_manage_py_honours_settings_and_pythonpath(tmp_path, form):
    # manage.py loads the settings before Django reads its options, to report
    # a bad setting in one line: it must load the ones the operator named.
    (tmp_path / "operator_settings.py").write_text(
        'from productsite.settings import *  # noqa\nMARK = "theirs"\n'
    )
    options = (
        ["--settings", "operator_settings", "--pythonpath", str(tmp_path)]
        if form == "separate"
        else ["--settings=operator_settings", f"--pythonpath={tmp_path}"]
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(DEBUG="1", ENV_FILE="/nonexistent/.env")
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            *options,
            "-c",
            "from django.conf import settings as s; print(s.SETTINGS_MODULE, s.MARK)",
        ],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "operator_settings theirs"


@pytest.mark.parametrize("module", ["no_such_settings", "no_such_package.settings", ".settings"])
def test_a_settings_module_that_cannot_load_is_one_line(module):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(DEBUG="1", ENV_FILE="/nonexistent/.env")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", f"--settings={module}"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("manage.py: configuration error:") and result.stderr.count("\n") == 1, (
        result.stderr
    )
    assert module in result.stderr


@pytest.mark.parametrize("blank", ["", " "])
def test_a_blank_yes_no_variable_counts_as_unset(blank):
    # As gunicorn.conf.py and scripts/run.sh read it: a compose file passing
    # ${PRODUCT_CACHE_ENABLED} through while it is unset must not turn the
    # cache off. "0" still does.
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.PRODUCT_CACHE_ENABLED, s.PRODUCT_FAST_PATH, s.DEBUG)"
    )
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "PRODUCT_CACHE_ENABLED", "PRODUCT_FAST_PATH"}
    }
    base.update(
        DJANGO_SETTINGS_MODULE="productsite.settings", ENV_FILE="/nonexistent/.env", SECRET_KEY="x" * 50
    )

    def read(**env: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=BASE_DIR, env={**base, **env}, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert read(PRODUCT_CACHE_ENABLED=blank, PRODUCT_FAST_PATH=blank, DEBUG=blank) == "True True False"
    assert read(PRODUCT_CACHE_ENABLED="0", PRODUCT_FAST_PATH="off") == "False False False"


def test_defaults_are_safe():
    result = run_settings(SECRET_KEY="x" * 50)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["debug"] is False
    assert values["hosts"] == []
    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["name"].endswith("db.sqlite3")
    assert values["redis"] == "redis://127.0.0.1:6379/0"
    assert values["timeout"] == 60
    assert values["conn_max_age"] > 0  # persistent connections
    assert values["options"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in values["options"]["init_command"]
    assert values["fallbacks"] == []
    assert values["prefix"] == "productsite"


def test_environment_overrides():
    result = run_settings(
        SECRET_KEY="x" * 50,
        ALLOWED_HOSTS="api.example.com,.example.org",
        DATABASE_URL="postgres://u@db.example.com:5432/catalogue",
        REDIS_URL="redis://cache.example.com:6380/2",
        PRODUCT_CACHE_TIMEOUT="15",
    )
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["hosts"] == ["api.example.com", ".example.org"]
    assert values["engine"] == "django.db.backends.postgresql"
    assert values["name"] == "catalogue"
    assert values["redis"] == "redis://cache.example.com:6380/2"
    assert values["timeout"] == 15


def test_a_key_rotation_keeps_the_old_keys_from_the_environment():
    # Signed cursors and sessions issued under an old key stay valid while it
    # is a fallback (test_a_cursor_the_server_did_not_issue_answers_400).
    result = run_settings(SECRET_KEY="n" * 50, SECRET_KEY_FALLBACKS="o" * 50 + ",p" + "q" * 49)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["fallbacks"] == ["o" * 50, "p" + "q" * 49]


@pytest.mark.parametrize("blank", ["", " "])
def test_a_blank_key_prefix_counts_as_unset(blank):
    # A compose file passing ${CACHE_KEY_PREFIX} through unset must not drop
    # the prefix (keys shared with whatever else uses the Redis database).
    result = run_settings(SECRET_KEY="x" * 50, CACHE_KEY_PREFIX=blank)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["prefix"] == "productsite"
    result = run_settings(SECRET_KEY="x" * 50, CACHE_KEY_PREFIX="shop-2")
    assert json.loads(result.stdout)["prefix"] == "shop-2"


def test_debug_runs_without_a_secret_key():
    result = run_settings(DEBUG="1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["debug"] is True


@pytest.mark.django_db
def test_product_cache_timeout_is_read_at_call_time(settings, make_product):
    import redis as redis_lib

    from products import cache, cachekeys
    from products.selectors import product_json

    settings.PRODUCT_CACHE_TIMEOUT = 7
    make_product("Mug")
    cache.get_product("Mug", product_json)
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    assert 0 < client.ttl(cachekeys.product_keys("Mug").value) <= 7


def test_system_checks_catch_a_cache_that_is_not_redis():
    from products.checks import check_product_cache, product_cache_problems

    assert check_product_cache(None) == []  # the real configuration
    # A configuration as plain data: no cache backend is ever built.
    ids = {message.id for message in product_cache_problems({"BACKEND": "example.NotRedisCache"}, 0)}
    assert {"products.E001", "products.E002", "products.W001"} <= ids
