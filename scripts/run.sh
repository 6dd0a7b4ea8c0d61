#!/usr/bin/env bash
# Run the service locally on http://127.0.0.1:8000 (or $PORT).
# Installs into .venv, migrates, finds or starts Redis, adds demo products to
# an empty catalogue, then serves with Django's development server.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

ensure_venv requirements.txt

export DEBUG="${DEBUG:-1}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
PORT="${PORT:-8000}"

if redis_answers "$REDIS_URL"; then
    say "Using Redis at $REDIS_URL"
elif command -v redis-server >/dev/null 2>&1 && [[ "$REDIS_URL" =~ ^redis://(127\.0\.0\.1|localhost):?([0-9]*) ]]; then
    port="${BASH_REMATCH[2]:-6379}"
    say "No Redis at $REDIS_URL; starting a local redis-server on port $port"
    start_redis "$port" || say "WARNING: redis-server did not start; serving WITHOUT a cache"
else
    say "WARNING: no Redis at $REDIS_URL and no redis-server installed: serving WITHOUT a cache"
    say "         (reads come from the database; /health/ reports \"cache\": \"down\")"
fi

"$PY" manage.py migrate --noinput -v 0
if "$PY" manage.py help seed_products >/dev/null 2>&1 &&
    [ "$("$PY" manage.py shell -v 0 -c 'from products.models import Product; print(Product.objects.exists())' 2>/dev/null | tail -1)" = "False" ]; then
    say "Empty catalogue: adding 50 demo products (manage.py seed_products 50)"
    "$PY" manage.py seed_products 50 --seed 1 >/dev/null
fi

say "Serving on http://127.0.0.1:$PORT/api/products/  (admin: /admin/, docs: /api/docs/)"
say "Create an admin user with: .venv/bin/python manage.py createsuperuser"
exec "$PY" manage.py runserver "127.0.0.1:$PORT"
