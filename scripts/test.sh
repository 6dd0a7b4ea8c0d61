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
    apt_install redis-server redis-server || die "No Redis answers at $TEST_REDIS_URL and redis-server is not installed.
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
apt_install redis-server redis-server || die "redis-server is required by the outage tests; install it"
# The Sentinel and Cluster tests start their own nodes (redis-server --sentinel,
# --cluster-enabled); redis-cli builds the cluster.
apt_install redis-cli redis-tools || die "redis-cli is required by the Redis Cluster tests; install redis-tools"
apt_install redis-sentinel redis-sentinel ||
    say "redis-sentinel not installed; the Sentinel tests use 'redis-server --sentinel', which is enough"

# --- Browser tests: the system Chromium, driven by Playwright -------------
deselect=""
if ! scripts/ensure_chromium.sh; then
    if [ -n "${CI:-}" ]; then
        die "Chromium is required for the browser tests in CI"
    fi
    say "WARNING: no Chromium: running WITHOUT the browser tests (-m 'not browser')"
    deselect="not browser"
fi

# --- The generated TypeScript client: Node.js >= 20.19 with npm --------------
# (products/tests/typescript pins @hey-api/openapi-ts, which needs that Node.)
node_is_recent() {
    node -e 'const [a, b] = process.versions.node.split(".").map(Number);
             process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' 2>/dev/null
}
if ! { apt_install node nodejs && apt_install npm npm && node_is_recent; }; then
    if [ -n "${CI:-}" ]; then
        die "Node.js >= 20.19 and npm are required for the TypeScript client test in CI"
    fi
    say "WARNING: no Node.js >= 20.19 with npm: running WITHOUT the TypeScript client test (-m 'not typescript')"
    deselect="${deselect:+$deselect and }not typescript"
fi
if [ -n "$deselect" ]; then set -- -m "$deselect" "$@"; fi

# --- Lint and format: the same ruff the developers run ---------------------
say "ruff check and ruff format --check"
"$VENV/bin/ruff" check --quiet . || die "ruff check found problems (run: .venv/bin/ruff check --fix .)"
"$VENV/bin/ruff" format --check --quiet . || die "files need formatting (run: .venv/bin/ruff format .)"
say "lint-imports (layering contracts in setup.cfg)"
"$VENV/bin/lint-imports" --no-cache >/dev/null || die "an import breaks the layering (run: .venv/bin/lint-imports)"

# --- SQLite and PostgreSQL, side by side, each in two lanes ------------------
# The two passes share nothing: each has its own test database, its own Redis
# key prefix (test_settings.py) and its own ports for the processes it starts.
# Each pass runs in two lanes at once (TEST_LANE, products/tests/conftest.py):
# the tests that mostly wait on Redis, Sentinel and Cluster processes of their
# own, and the rest; each lane has its own test database too. The SQLite
# pass's "rest" lane prints as it goes; the others write logs under .run/,
# shown when all are done, so the run ends with pytest's summary line.
SQLITE_LANE_DB="$RUN_DIR/test-db-redis-processes.sqlite3"
PG_LANE_DB="${DATABASE_TEST_NAME:-test_products}_redis_processes"
lane_pids=()
lane_logs=()
start_lane() {  # start_lane LOG VAR=VALUE...: one lane of pytest in the background
    local log="$1"
    shift
    env "$@" "$PY" -m pytest "${PYTEST_ARGS[@]}" >"$log" 2>&1 &
    lane_pids+=("$!")
    lane_logs+=("$log")
}
stop_lanes() { for pid in "${lane_pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap 'stop_lanes; cleanup' EXIT
PYTEST_ARGS=("$@")

PG_URL="$(postgres_url || true)"
say "pytest on SQLite, tests that start Redis processes: $RUN_DIR/pytest-sqlite-redis-processes.log"
start_lane "$RUN_DIR/pytest-sqlite-redis-processes.log" -u DATABASE_URL \
    TEST_LANE=redis-processes SQLITE_TEST_NAME="$SQLITE_LANE_DB"
if [ -n "$PG_URL" ]; then
    # It leaves out the tests marked database_independent: they start their
    # servers and commands on databases of their own, as on the SQLite pass.
    for lane in redis-processes rest; do
        log="$RUN_DIR/pytest-postgresql-$lane.log"
        say "pytest on PostgreSQL ($PG_URL), $lane: $log"
        extra=()
        if [ "$lane" = redis-processes ]; then extra=(DATABASE_TEST_NAME="$PG_LANE_DB"); fi
        start_lane "$log" DATABASE_URL="$PG_URL" DATABASE_INDEPENDENT_TESTS=skip TEST_LANE="$lane" "${extra[@]}"
    done
else
    say "PostgreSQL not reachable (set DATABASE_URL=postgres://...); running on SQLite only"
fi
say "pytest on SQLite, the rest"
rc=0
env -u DATABASE_URL TEST_LANE=rest "$PY" -m pytest "$@" || rc=$?
statuses=("$rc")
for i in "${!lane_pids[@]}"; do
    rc=0
    wait "${lane_pids[$i]}" || rc=$?
    statuses+=("$rc")
    say "${lane_logs[$i]}"
    cat "${lane_logs[$i]}"
done
lane_pids=()
# 5 is pytest's "no test collected": arguments that select tests of one lane
# leave the other lanes empty. The run fails on any other failure, or when
# no lane ran a test.
status=5
for s in "${statuses[@]}"; do
    if [ "$s" != 0 ] && [ "$s" != 5 ]; then
        status="$s"
        break
    fi
    [ "$s" = 0 ] && status=0
done
exit "$status"
