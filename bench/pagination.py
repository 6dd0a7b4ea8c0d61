"""Benchmark: the cost of a list page does not grow with the catalogue.

Builds throwaway catalogues of 1,000 and 1,000,000 products (SQLite files in
bench/results/, or PostgreSQL databases with --postgres URL), then times
``GET /api/products/`` through the whole Django stack (middleware, throttle,
filters, keyset paginator, serializer, renderer) for each ordering:

* the first page, and
* a page that starts beyond item 900,000 (its cursor is built from the row at
  offset 900,000 outside the timing, as a client walking there would hold it).

Prints the median of several requests per cell, and the ratio of the worst
1,000,000-product page to the first page at 1,000 products (the target is at
most 3x). Then, on the largest catalogue, the first page of every filter x
ordering cell against the unfiltered first page of the same ordering (the
target is at most 5x). Not a test: figures depend on the machine.

    .venv/bin/python bench/pagination.py                 # SQLite
    .venv/bin/python bench/pagination.py --postgres postgres://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ORDERINGS = ["name", "price", "-quantity", "created_at", "-updated_at"]
PAGE_SIZE = 50
# Filters of every kind and selectivity (names are "product <16 hex digits> <n>",
# prices 0.00-999.99, quantities 0-999, all uniform).
FILTERS = [
    "search=zzzz",  # no match
    "search=product",  # every product
    "search=abcde",  # a dozen products
    "search=ab",  # 2 characters (no trigram): ~6% of products
    "min_price=499.98",  # half
    "max_price=0.50",  # 0.05%
    "min_price=700.00&max_price=700.30",  # 0.03%
    "in_stock=true",  # 99.9%
    "in_stock=false",  # 0.1%
]


def _child(rows: int, database_url: str, repeats: int, build_only: bool) -> dict:
    """Build a catalogue of ``rows`` products, or time its pages (runs in its own process)."""
    os.environ.update(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="productsite.settings",
        SECRET_KEY="bench-only-not-secret",
        ALLOWED_HOSTS="testserver",
        CACHE_KEY_PREFIX=f"bench-pagination-{os.getpid()}",
        THROTTLE_ANON_RATE="100000000/minute",
        LOG_LEVEL="WARNING",
        PAGE_SIZE=str(PAGE_SIZE),
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction
    from rest_framework.test import APIClient

    from products.models import Product
    from products.pagination import ProductKeysetPagination

    call_command("migrate", verbosity=0)
    build = time.perf_counter()
    if Product.objects.count() != rows:
        _fill(connection, transaction, Product, rows)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM ANALYZE {Product._meta.db_table}")
        else:
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
    build = time.perf_counter() - build
    if build_only:
        return {"rows": rows, "vendor": connection.vendor, "build_s": build}

    client = APIClient()
    timings: dict[str, dict[str, float]] = {}
    for ordering in ORDERINGS:
        url = f"/api/products/?ordering={ordering}&page_size={PAGE_SIZE}"
        cells = {"first": _median(client, url, repeats)}
        if rows > 900_000:
            cells["deep"] = _median(
                client,
                url + "&cursor=" + _cursor_at(Product, ProductKeysetPagination, ordering, 900_000),
                repeats,
            )
        timings[ordering] = cells
    filtered: dict[str, dict[str, list[float]]] = {}
    if rows >= 100_000:
        for query in FILTERS:
            filtered[query] = {
                ordering: _paired_medians(
                    client,
                    f"/api/products/?ordering={ordering}&page_size={PAGE_SIZE}",
                    f"/api/products/?{query}&ordering={ordering}&page_size={PAGE_SIZE}",
                    repeats,
                )
                for ordering in ORDERINGS
            }
    return {
        "rows": rows,
        "vendor": connection.vendor,
        "build_s": build,
        "timings": timings,
        "filtered": filtered,
    }


def _fill(connection, transaction, Product, rows: int) -> None:
    """Insert ``rows`` products with raw batched INSERTs (minutes faster than the ORM)."""
    rng = random.Random(42)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ops = connection.ops
    table = Product._meta.db_table
    sql = f"INSERT INTO {table} (name, price, quantity, created_at, updated_at) VALUES (%s, %s, %s, %s, %s)"
    batch = []
    with transaction.atomic(), connection.cursor() as cursor:
        for i in range(rows):
            # Few distinct prices, quantities and timestamps: many ties, which
            # the name tie-breaker resolves.
            stamp = start + timedelta(seconds=i // 100)
            batch.append(
                (
                    f"product {rng.getrandbits(64):016x} {i}",
                    ops.adapt_decimalfield_value(Decimal(rng.randrange(0, 100_000)) / 100, 12, 2),
                    rng.randrange(0, 1000),
                    ops.adapt_datetimefield_value(stamp),
                    ops.adapt_datetimefield_value(stamp + timedelta(seconds=rng.randrange(0, 3600))),
                )
            )
            if len(batch) == 10_000:
                cursor.executemany(sql, batch)
                batch.clear()
        if batch:
            cursor.executemany(sql, batch)


def _cursor_at(Product, Paginator, ordering: str, offset: int) -> str:
    """Return the cursor a client would hold after walking to ``offset``."""
    paginator = Paginator()
    paginator.ordering = ordering
    paginator.field = ordering.lstrip("-")
    fields = paginator._sort_fields()
    desc = ordering.startswith("-")
    row = Product.objects.order_by(*[("-" if desc else "") + f for f in fields]).values(*fields)[offset]
    value = row.get(paginator.field) if paginator.field != "name" else None
    return paginator.encode_cursor("n", value, row["name"])


def _median(client, url: str, repeats: int, full: bool = True) -> float:
    for _ in range(5):  # warm-up: connections, caches, the page cache
        assert client.get(url).status_code == 200
    samples = []
    for _ in range(repeats):
        begin = time.perf_counter()
        response = client.get(url)
        samples.append(time.perf_counter() - begin)
        assert response.status_code == 200, response.content[:300]
        assert not full or len(response.json()["results"]) == PAGE_SIZE
    return statistics.median(samples) * 1000


def _paired_medians(client, base_url: str, url: str, repeats: int) -> list[float]:
    """Return [unfiltered, filtered] medians (ms), timed alternately so both see the same load."""
    for _ in range(3):
        client.get(base_url)
        client.get(url)
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for index, target in enumerate((base_url, url)):
            begin = time.perf_counter()
            response = client.get(target)
            samples[index].append(time.perf_counter() - begin)
            assert response.status_code == 200, response.content[:300]
    return [statistics.median(s) * 1000 for s in samples]


def _run_child(rows: int, url: str, repeats: int, build_only: bool) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        str(rows),
        "--database-url",
        url,
        "--repeats",
        str(repeats),
    ] + (["--build-only"] if build_only else [])
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def _pg_name(rows: int, keep: bool) -> str:
    # Per run unless kept, so two runs on one server never drop each other's.
    return f"bench_pagination_{rows}_kept" if keep else f"bench_pagination_{rows}_{os.getpid()}"


def _postgres_db(admin_url: str, name: str, create: bool, keep: bool = False) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and not keep:
            conn.execute(f'DROP DATABASE "{name}"')
        if create and not (exists and keep):
            conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    return f"{base}/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,1000000", help="catalogue sizes (comma-separated)")
    parser.add_argument("--repeats", type=int, default=30, help="timed requests per cell and round")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="timing rounds; sizes alternate, so all see the same machine load",
    )
    parser.add_argument(
        "--postgres", metavar="URL", help="an admin URL; throwaway databases are created there"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the catalogues (SQLite files, databases) for a rerun"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(_child(args.child, args.database_url, args.repeats, args.build_only)))
        return

    RESULTS.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    urls = {}
    for rows in sizes:
        if args.postgres:
            urls[rows] = _postgres_db(args.postgres, _pg_name(rows, args.keep), create=True, keep=args.keep)
        else:
            path = RESULTS / f"pagination-{rows}.sqlite3"
            if not args.keep:
                for stale in RESULTS.glob(f"pagination-{rows}.sqlite3*"):
                    stale.unlink()
            urls[rows] = f"sqlite:///{path}"
        print(f"building {rows:,} products ...", file=sys.stderr, flush=True)
        built = _run_child(rows, urls[rows], args.repeats, build_only=True)
        print(f"  built in {built['build_s']:.1f}s", file=sys.stderr)

    # Time in alternating rounds and keep each cell's best median: other work
    # on the machine then weighs on every size alike.
    best: dict[int, dict] = {}
    for round_ in range(args.rounds):
        for rows in sizes:
            print(
                f"round {round_ + 1}/{args.rounds}: timing {rows:,} products ...", file=sys.stderr, flush=True
            )
            result = _run_child(rows, urls[rows], args.repeats, build_only=False)
            if rows not in best:
                best[rows] = result
                continue
            for ordering, cells in result["timings"].items():
                for cell, value in cells.items():
                    best[rows]["timings"][ordering][cell] = min(best[rows]["timings"][ordering][cell], value)
            for query, cells in result["filtered"].items():
                for ordering, pair in cells.items():
                    # The round whose filtered page was fastest, with its own baseline.
                    if pair[1] < best[rows]["filtered"][query][ordering][1]:
                        best[rows]["filtered"][query][ordering] = pair
    if args.postgres and not args.keep:
        for rows in sizes:
            _postgres_db(args.postgres, _pg_name(rows, args.keep), create=False)
    results = [best[rows] for rows in sizes]

    small, large = results[0], results[-1]
    print(
        f"\nGET /api/products/?ordering=...&page_size={PAGE_SIZE}; ms, best of {args.rounds} "
        f"rounds of the median of {args.repeats} requests; {large['vendor']}\n"
    )
    print(
        f"| ordering | first page, {small['rows']:,} | first page, {large['rows']:,} "
        f"| page after item 900,000, {large['rows']:,} | worst / first at {small['rows']:,} |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for ordering in ORDERINGS:
        base = small["timings"][ordering]["first"]
        big = large["timings"][ordering]
        worst = max(big.values())
        deep = f"{big['deep']:.2f}" if "deep" in big else "n/a"
        print(f"| `{ordering}` | {base:.2f} | {big['first']:.2f} | {deep} | {worst / base:.2f}x |")
    if large["filtered"]:
        _print_filtered(large)


def _print_filtered(result: dict) -> None:
    """Print the filter x ordering table: ms (ratio to the unfiltered first page of that ordering)."""
    print(
        f"\nFirst page of GET /api/products/?<filter>&ordering=<ordering>, {result['rows']:,} products, "
        f"{result['vendor']}; ms (x the unfiltered first page of the same ordering, timed alternately with it)\n"
    )
    print("| filter | " + " | ".join(f"`{o}`" for o in ORDERINGS) + " |")
    print("| --- |" + " ---: |" * len(ORDERINGS))
    unfiltered = {
        o: statistics.median(cells[o][0] for cells in result["filtered"].values()) for o in ORDERINGS
    }
    print(
        "| (none, median of its paired runs) | "
        + " | ".join(f"{unfiltered[o]:.1f}" for o in ORDERINGS)
        + " |"
    )
    worst = 0.0
    for query, cells in result["filtered"].items():
        ratios = {o: cells[o][1] / cells[o][0] for o in ORDERINGS}
        worst = max(worst, *ratios.values())
        print(
            f"| `{query}` | " + " | ".join(f"{cells[o][1]:.1f} ({ratios[o]:.1f}x)" for o in ORDERINGS) + " |"
        )
    print(f"\nworst cell: {worst:.1f}x the unfiltered first page")


if __name__ == "__main__":
    main()
