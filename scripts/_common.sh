# Shared setup for scripts/run.sh and scripts/test.sh (sourced, not run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
RUN_DIR="$ROOT/.run"
mkdir -p "$RUN_DIR"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

find_python() {
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    die "Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)"
}

# Create the virtualenv and install a requirements file, once per change of it.
ensure_venv() {
    local requirements="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        say "Creating virtualenv in .venv"
        local python
        python="$(find_python)"
        if ! "$python" -m venv "$VENV" 2>/dev/null; then
            # Debian and Ubuntu ship venv separately (python3-venv).
            rm -rf "$VENV"
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
                say "Installing python3-venv (apt-get)"
                apt-get install -y -q python3-venv >/dev/null 2>&1 ||
                    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q python3-venv >/dev/null 2>&1; } || true
            fi
            "$python" -m venv "$VENV" ||
                die "could not create a virtualenv with $python (on Debian/Ubuntu: apt-get install python3-venv)"
        fi
    fi
    local stamp="$VENV/.installed-$(basename "$requirements")"
    local digest
    digest="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
        say "Installing $requirements"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -r "$requirements"
        echo "$digest" >"$stamp"
    fi
    PY="$VENV/bin/python"
}

# setting NAME: the variable as productsite.settings reads it: from the
# environment, else from .env (ENV_FILE), which only fills in what is unset.
setting() {
    "$PY" - "$1" <<'PYEOF'
import os, sys
import environ
env_file = os.environ.get("ENV_FILE", ".env")
if os.path.isfile(env_file):
    environ.Env.read_env(env_file)
print(os.environ.get(sys.argv[1], "").strip())
PYEOF
}

# redis_answers URL: exit 0 when a Redis answers PING at URL.
redis_answers() {
    "$PY" - "$1" <<'PYEOF' 2>/dev/null
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_timeout=1, socket_connect_timeout=1).ping()
PYEOF
}

# apt_install COMMAND PACKAGE: install PACKAGE with apt-get (as root) when COMMAND is missing.
apt_install() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "Installing $2 (apt-get)"
        (apt-get install -y -q "$2" >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$2" >/dev/null 2>&1; }) || true
    fi
    command -v "$1" >/dev/null 2>&1
}

# start_redis PORT: start a local redis-server in .run/ (no persistence).
start_redis() {
    local port="$1"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
        --dir "$RUN_DIR" --pidfile "$RUN_DIR/redis-$port.pid" --logfile "$RUN_DIR/redis-$port.log"
    for _ in $(seq 50); do
        redis_answers "redis://127.0.0.1:$port/0" && return 0
        sleep 0.1
    done
    return 1
}

# postgres_url: print a reachable PostgreSQL URL for the tests, if any.
postgres_url() {
    local candidates=()
    if [ -n "${DATABASE_URL:-}" ] && [[ "$DATABASE_URL" == postgres* ]]; then
        candidates+=("$DATABASE_URL")
    fi
    candidates+=("postgres://postgres@127.0.0.1:5432/test" "postgres://root@127.0.0.1:5432/test")
    for url in "${candidates[@]}"; do
        if "$PY" - "$url" <<'PYEOF' 2>/dev/null; then
import sys, psycopg
psycopg.connect(sys.argv[1].replace("postgres://", "postgresql://", 1), connect_timeout=2).close()
PYEOF
            echo "$url"
            return 0
        fi
        if [ "$url" = "${DATABASE_URL:-}" ]; then
            # Not silently: the run would test another database than the one asked for.
            echo "WARNING: DATABASE_URL (${url/\/\/*@/\/\/***@}) does not answer (is its database created?); trying the local defaults" >&2
        fi
    done
    return 1
}
