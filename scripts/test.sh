#!/usr/bin/env bash
# Run the test suite: installs what it needs, finds (or starts) Redis, runs
# pytest on SQLite and, at the same time, on PostgreSQL when one is reachable.
# Extra arguments go to pytest, e.g. scripts/test.sh -k cache -x
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

ensure_venv requirements-dev.txt

# --- Redis: its own database number (9) and a key prefix per run ---------
TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/9}"
STARTED_REDIS=""
if ! redis_answers "$TEST_REDIS_URL"; then
    install_redis_server || die "No Redis answers at $TEST_REDIS_URL and redis-server is not installed.
Install it (e.g. 'apt-get install redis-server' or 'brew install redis') or set TEST_REDIS_URL."
    port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    say "No Redis at $TEST_REDIS_URL; starting a throwaway redis-server on port $port"
    start_redis "$port" || die "redis-server did not start (see $RUN_DIR/redis-$port.log)"
    STARTED_REDIS="$RUN_DIR/redis-$port.pid"
    TEST_REDIS_URL="redis://127.0.0.1:$port/9"
fi
cleanup() { [ -n "$STARTED_REDIS" ] && [ -f "$STARTED_REDIS" ] && kill "$(cat "$STARTED_REDIS")" 2>/dev/null || true; }
trap cleanup EXIT
export TEST_REDIS_URL
# The fault tests start their own redis-server processes.
install_redis_server || die "redis-server is required by the outage tests; install it"
# The Sentinel and Cluster tests start their own nodes (redis-server --sentinel,
# --cluster-enabled); redis-cli builds the cluster.
apt_install redis-cli redis-tools || die "redis-cli is required by the Redis Cluster tests; install redis-tools"
apt_install redis-sentinel redis-sentinel ||
    say "redis-sentinel not installed; the Sentinel tests use 'redis-server --sentinel', which is enough"

# --- Browser tests: the system Chromium, driven by Playwright -------------
if ! scripts/ensure_chromium.sh; then
    if [ -n "${CI:-}" ]; then
        die "Chromium is required for the browser tests in CI"
    fi
    say "WARNING: no Chromium: running WITHOUT the browser tests (-m 'not browser')"
    set -- -m "not browser" "$@"
fi

# --- Lint and format: the same ruff the developers run ---------------------
say "ruff check and ruff format --check"
"$VENV/bin/ruff" check --quiet . || die "ruff check found problems (run: .venv/bin/ruff check --fix .)"
"$VENV/bin/ruff" format --check --quiet . || die "files need formatting (run: .venv/bin/ruff format .)"
say "lint-imports (layering contracts in setup.cfg)"
"$VENV/bin/lint-imports" --no-cache >/dev/null || die "an import breaks the layering (run: .venv/bin/lint-imports)"

# --- SQLite and PostgreSQL, side by side ------------------------------------
# The two passes share nothing: each has its own test database, its own Redis
# key prefix (test_settings.py) and its own ports for the processes it starts.
# Most of a pass is one busy process, so on two cores they run in about the
# time of one. The PostgreSQL pass writes to a log, shown when both are done.
status=0
PG_URL="$(postgres_url || true)"
if [ -n "$PG_URL" ]; then
    pg_log="$RUN_DIR/pytest-postgresql.log"
    say "pytest on PostgreSQL ($PG_URL), in the background: $pg_log"
    # It leaves out the tests marked database_independent: they start their
    # servers and commands on databases of their own, as on the SQLite pass.
    DATABASE_URL="$PG_URL" DATABASE_INDEPENDENT_TESTS=skip "$PY" -m pytest "$@" >"$pg_log" 2>&1 &
    pg_pid=$!
    trap 'kill "$pg_pid" 2>/dev/null || true; cleanup' EXIT
else
    say "PostgreSQL not reachable (set DATABASE_URL=postgres://...); running on SQLite only"
fi
say "pytest on SQLite"
env -u DATABASE_URL "$PY" -m pytest "$@" || status=$?
if [ -n "$PG_URL" ]; then
    wait "$pg_pid" || status=$?
    say "pytest on PostgreSQL ($PG_URL)"
    cat "$pg_log"
fi
exit "$status"
