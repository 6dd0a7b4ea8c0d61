#!/usr/bin/env bash
# Run the service locally on http://127.0.0.1:8000 (or $PORT).
#
# Installs into .venv, writes a .env with a generated SECRET_KEY on first run,
# migrates, finds or starts Redis, adds demo products to an empty catalogue,
# then serves as in production: gunicorn (gunicorn.conf.py), DEBUG off, static
# files from the app. DEBUG=1 scripts/run.sh serves with Django's auto-reloading
# development server instead.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

ensure_venv requirements.txt

# An empty SECRET_KEY counts as unset, as for the variables below: .env's (or
# a new one) is used. Left set, it would hide .env's from the settings.
if [ -n "${SECRET_KEY+set}" ] && [ -z "${SECRET_KEY// /}" ]; then unset SECRET_KEY; fi

# The file the settings read (ENV_FILE, as productsite/settings.py and gunicorn.conf.py).
ENV_FILE="${ENV_FILE:-.env}"
export ENV_FILE
if [ ! -f "$ENV_FILE" ]; then
    say "Writing $ENV_FILE with a generated SECRET_KEY (kept out of git)"
    umask 077
    printf 'SECRET_KEY=%s\nALLOWED_HOSTS=127.0.0.1,localhost,[::1]\n' \
        "$("$PY" -c 'import secrets; print(secrets.token_urlsafe(50))')" >"$ENV_FILE"
elif [ -z "$(setting SECRET_KEY)" ]; then
    # A file written by hand first (say, with REDIS_URL only): add what the first run would have.
    say "Adding a generated SECRET_KEY to $ENV_FILE"
    printf '\nSECRET_KEY=%s\n' "$("$PY" -c 'import secrets; print(secrets.token_urlsafe(50))')" >>"$ENV_FILE"
    if [ -z "$(setting ALLOWED_HOSTS)" ]; then
        printf 'ALLOWED_HOSTS=127.0.0.1,localhost,[::1]\n' >>"$ENV_FILE"
    fi
fi

# The Redis settings as the service will read them: the environment, else .env.
REDIS_URL="$(setting REDIS_URL)"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
# The environment, else .env, as gunicorn.conf.py reads them (an empty one counts as unset).
for variable in PORT GUNICORN_BIND WEB_CONCURRENCY GUNICORN_THREADS DEBUG; do
    if [ -n "${!variable+set}" ] && [ -z "${!variable// /}" ]; then unset "$variable"; fi
done
PORT="$(setting PORT)"
export PORT="${PORT:-8000}"
BIND="$(setting GUNICORN_BIND)"
BIND="${BIND:-127.0.0.1:$PORT}"

# A small machine's defaults, unless the environment or .env says otherwise;
# gunicorn.conf.py reads GUNICORN_BIND (default 127.0.0.1:$PORT) itself.
WEB_CONCURRENCY="$(setting WEB_CONCURRENCY)" GUNICORN_THREADS="$(setting GUNICORN_THREADS)"
export WEB_CONCURRENCY="${WEB_CONCURRENCY:-2}" GUNICORN_THREADS="${GUNICORN_THREADS:-4}"
# gunicorn reads WEB_CONCURRENCY itself before its config file could say which
# variable is wrong (a traceback): one line here instead.
for variable in PORT WEB_CONCURRENCY GUNICORN_THREADS; do
    if ! [[ "${!variable}" =~ ^[1-9][0-9]*$ ]]; then
        die "$variable=${!variable} is not a whole number of at least 1 (environment or .env)"
    fi
done

if [ -n "$(setting REDIS_SENTINELS)$(setting REDIS_CLUSTER_NODES)" ]; then
    say "Using the Redis Sentinels or Cluster nodes the settings name"
elif redis_answers "$REDIS_URL"; then
    say "Using Redis at ${REDIS_URL/\/\/*@/\/\/***@}"
elif command -v redis-server >/dev/null 2>&1 && [[ "$REDIS_URL" =~ ^redis://(127\.0\.0\.1|localhost)(:([0-9]+))? ]]; then
    port="${BASH_REMATCH[3]:-6379}"
    say "No Redis at $REDIS_URL; starting a local redis-server on port $port"
    if start_redis "$port"; then
        say "It keeps running after the service stops (no data on disk); stop it with: kill \$(cat $RUN_DIR/redis-$port.pid)"
    else
        say "WARNING: redis-server did not start; serving WITHOUT a cache"
    fi
else
    if command -v redis-server >/dev/null 2>&1; then
        why="a local redis-server is started only for redis://127.0.0.1 or redis://localhost"
    else
        why="no redis-server is installed"
    fi
    say "WARNING: no Redis at ${REDIS_URL/\/\/*@/\/\/***@}, and $why: serving WITHOUT a cache"
    say "         (reads come from the database; /health/ reports \"cache\": \"down\")"
fi

# A taken port: say so now, not after gunicorn's retries.
if [[ "$BIND" =~ ^(.*):([0-9]+)$ ]] && ! "$PY" -c '
import socket, sys
host = sys.argv[1].strip("[]") or "0.0.0.0"
with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(sys.argv[2])))
' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" 2>/dev/null; then
    die "$BIND is already in use (another server?); choose another port, e.g. PORT=8001 scripts/run.sh"
fi

"$PY" manage.py migrate --noinput -v 0
if [ "$("$PY" manage.py shell -v 0 -c 'from products.models import Product; print(Product.objects.exists())' 2>/dev/null | tail -1)" = "False" ]; then
    say "Empty catalogue: adding 50 demo products (manage.py seed_products 50 --seed 1)"
    "$PY" manage.py seed_products 50 --seed 1 >/dev/null || say "WARNING: seeding demo products failed"
fi

say "Serving on http://$BIND/api/products/  (admin: /admin/, docs: /api/docs/, health: /health/)"
say "An admin user: .venv/bin/python manage.py createsuperuser"
DEBUG="$(setting DEBUG)"
case "${DEBUG:-0}" in
    1 | true | True | yes | on)
        exec "$PY" manage.py runserver "$BIND"
        ;;
esac
"$PY" manage.py collectstatic --noinput -v 0
exec "$VENV/bin/gunicorn" productsite.wsgi:application -c gunicorn.conf.py
