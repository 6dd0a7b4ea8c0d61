#!/usr/bin/env python
"""Benchmark import_products / export_products against plain sqlite3, in one run.

    .venv/bin/python bench/import_export.py              # 1,000,000 rows
    .venv/bin/python bench/import_export.py --rows 100000

Steps, each in its own process so its peak memory (ru_maxrss from wait4) is its own:

1. generate N product rows as CSV (name ~21 chars, price with two places, quantity);
2. ``manage.py import_products`` into an empty, migrated SQLite database, then
   the same file again (every row looked up, found unchanged, nothing written);
3. the raw reference: the same CSV read with ``csv.reader`` and inserted with one
   ``sqlite3`` ``executemany`` into a copy of the same empty database (same
   schema, indexes and pragmas: WAL, synchronous=NORMAL), no validation;
4. ``manage.py export_products -o`` from the imported database;
5. the raw reference: ``SELECT name, printf('%.2f', price), quantity ... ORDER BY id``
   written with ``csv.writer``: the same rows, in the same order, with the same
   two-place prices as the export (SQLite formats the prices, the cheapest plain
   way), so it does the same work;
6. check the export, and the raw reference's file, are byte-for-byte the
   generated file (exact round trip; a fair reference).

``--only export`` imports once (untimed) and times only the exports, for
working on the export without the minutes a million-row import takes.

Times are wall-clock for the whole process, Python start-up included (Django's
adds ~0.4 s to the import and export). Every step runs ``--repeat`` times
(default 3), alternating with its reference, each import into a fresh copy of
the empty database; the best time counts, and the highest peak memory. Goals from issue 4: import >= 1/5 of the
raw executemany rate, export >= 1/2 of the raw SELECT-to-CSV rate, peak memory
under 200 MB for both.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RAW_INSERT = r"""
import csv, sqlite3, sys
db, source, stamp = sys.argv[1:4]
connection = sqlite3.connect(db, isolation_level=None)
connection.execute("PRAGMA journal_mode=WAL")
connection.execute("PRAGMA synchronous=NORMAL")
with open(source, newline="", encoding="utf-8") as handle:
    rows = csv.reader(handle)
    next(rows)
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(
        'INSERT INTO products_product (name, price, quantity, created_at, updated_at) '
        'VALUES (?, ?, ?, ?, ?)',
        ((name, price, quantity, stamp, stamp) for name, price, quantity in rows),
    )
    connection.execute("COMMIT")
print(connection.execute("SELECT count(*) FROM products_product").fetchone()[0])
"""

RAW_EXPORT = r"""
import csv, sqlite3, sys
db, target = sys.argv[1:3]
connection = sqlite3.connect(db)
with open(target, "w", newline="", encoding="utf-8") as handle:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(("name", "price", "quantity"))
    # The export's work: every row in primary-key order, prices with two places.
    # (A bare "SELECT name, price, quantity" scans a covering index in another
    # order and writes 12.3 for 12.30: less work, and not the same file.)
    writer.writerows(
        connection.execute(
            "SELECT name, printf('%.2f', price), quantity FROM products_product ORDER BY id"
        )
    )
"""


def generate(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    colours = ("red", "blue", "green", "black", "white", "amber", "teal", "plum")
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("name,price,quantity\n")
        batch = []
        for number in range(rows):
            cents = rng.randint(0, 99_999_999)
            batch.append(
                f"Product {number:07d} {rng.choice(colours)},{cents // 100}.{cents % 100:02d},"
                f"{rng.randint(0, 5000)}\n"
            )
            if len(batch) == 10_000:
                handle.write("".join(batch))
                batch.clear()
        handle.write("".join(batch))


def measure(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a process; return (seconds, peak RSS in MB, stdout+stderr)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({process.returncode}):\n{output}")
    return seconds, usage.ru_maxrss / 1024, output.strip()  # ru_maxrss is in KB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of every step; the best time counts (default 3)"
    )
    parser.add_argument(
        "--only",
        choices=("export",),
        help="time only the exports (the data is imported once, untimed)",
    )
    parser.add_argument("--workdir", help="where to put the files (default: a temporary directory, removed)")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-import-export-"))
    workdir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    source, export, raw_export = workdir / "products.csv", workdir / "export.csv", workdir / "raw-export.csv"
    template, django_db, raw_db = (workdir / f"{n}.sqlite3" for n in ("empty", "django", "raw"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "productsite.settings",
        "SECRET_KEY": "benchmark-only",
        "DEBUG": "0",
        "DATABASE_URL": f"sqlite:///{django_db}",
        # Its own key prefix: the import retires only this prefix's cache generation.
        "CACHE_KEY_PREFIX": f"bench-import-export-{os.getpid()}",
        "LOG_LEVEL": "ERROR",
    }
    env.pop("PYTHONHASHSEED", None)

    print(f"Generating {args.rows:,} rows in {source} ...", file=sys.stderr)
    generate(source, args.rows, args.seed)
    size_mb = source.stat().st_size / 1e6
    _fresh_copy(None, django_db)
    measure([python, "manage.py", "migrate", "-v", "0"], env)
    shutil.copyfile(django_db, template)  # the same empty schema for every run

    # Every step runs --repeat times, alternating with its reference, and the
    # best time counts (peak memory: the worst run): on a shared machine one
    # slow run is noise, not the code.
    stamp = "2026-01-01 00:00:00"
    imports, agains, raws, exports, raw_exports = [], [], [], [], []
    if args.only == "export":
        print("import_products (once, untimed) ...", file=sys.stderr)
        _fresh_copy(template, django_db)
        measure([python, "manage.py", "import_products", str(source)], env)
    for attempt in range(1, args.repeat + 1 if args.only is None else 1):
        print(f"[{attempt}/{args.repeat}] import_products, again, raw executemany ...", file=sys.stderr)
        _fresh_copy(template, django_db)
        imports.append(measure([python, "manage.py", "import_products", str(source)], env))
        agains.append(measure([python, "manage.py", "import_products", str(source)], env))
        _fresh_copy(template, raw_db)
        raws.append(measure([python, "-c", RAW_INSERT, str(raw_db), str(source), stamp], env))
        assert int(raws[-1][2].splitlines()[-1]) == args.rows, raws[-1][2]
    for attempt in range(1, args.repeat + 1):
        print(f"[{attempt}/{args.repeat}] export_products, raw SELECT to CSV ...", file=sys.stderr)
        exports.append(measure([python, "manage.py", "export_products", "-o", str(export)], env))
        raw_exports.append(measure([python, "-c", RAW_EXPORT, str(django_db), str(raw_export)], env))
    (export_s, export_mb, export_out), (raw_export_s, raw_export_mb, _) = _best(exports), _best(raw_exports)
    identical = _same_file(source, export)
    raw_identical = _same_file(source, raw_export)
    rows = args.rows
    results = [
        ("export_products", export_s, export_mb),
        ("raw SELECT to CSV (same rows, order and formatting)", raw_export_s, raw_export_mb),
    ]
    export_ratio = raw_export_s / export_s
    import_ratio = None
    if args.only is None:
        (import_s, import_mb, import_out), (again_s, again_mb, again_out), (raw_s, raw_mb, _) = (
            _best(imports),
            _best(agains),
            _best(raws),
        )
        results[:0] = [
            ("import_products (validate + upsert)", import_s, import_mb),
            ("raw sqlite3 executemany (no validation)", raw_s, raw_mb),
            ("import_products again, all rows unchanged", again_s, again_mb),
        ]
        import_ratio = raw_s / import_s

    print()
    print(
        f"{rows:,} rows, CSV {size_mb:.0f} MB, SQLite, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print()
    print("| step | seconds | rows/s | peak RSS (MB) |")
    print("| --- | ---: | ---: | ---: |")
    for label, seconds, peak in results:
        print(f"| {label} | {seconds:.1f} | {rows / seconds:,.0f} | {peak:.0f} |")
    print()
    if import_ratio is not None:
        print(
            f"- import: {import_ratio:.2f} of raw executemany (goal >= 0.50: "
            f"{'met' if import_ratio >= 0.5 else 'NOT met'}); peak {import_mb:.0f} MB "
            f"(goal < 200: {'met' if import_mb < 200 else 'NOT met'})"
        )
    print(
        f"- export: {export_ratio:.2f} of raw SELECT to CSV (goal >= 0.75: "
        f"{'met' if export_ratio >= 0.75 else 'NOT met'}); peak {export_mb:.0f} MB "
        f"(goal < 200: {'met' if export_mb < 200 else 'NOT met'})"
    )
    print(
        f"- round trip: export is {'byte-for-byte identical to' if identical else 'DIFFERENT from'} "
        "the imported file; the raw reference's file is "
        f"{'identical too' if raw_identical else 'DIFFERENT'}"
    )
    print()
    if import_ratio is not None:
        print(f"import_products said: {import_out.splitlines()[-1]}")
        print(f"import_products again said: {again_out.splitlines()[-1]}")
    print(f"export_products said: {export_out.splitlines()[-1]}")

    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / f"import_export-{rows}{'-' + args.only if args.only else ''}.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "steps": [
                    {"step": label, "seconds": s, "rows_per_second": rows / s, "peak_rss_mb": m}
                    for label, s, m in results
                ],
                "import_ratio": import_ratio,
                "export_ratio": export_ratio,
                "round_trip_identical": identical,
                "raw_reference_identical": raw_identical,
            },
            indent=2,
        )
    )
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    if not identical:
        raise SystemExit("the export differs from the imported file")
    if not raw_identical:
        raise SystemExit("the raw reference's file differs from the imported file: not the same work")


def _best(runs: list[tuple[float, float, str]]) -> tuple[float, float, str]:
    """Return the fastest run's time and output, with the highest peak memory of all runs."""
    seconds, _, output = min(runs)
    return seconds, max(peak for _, peak, _ in runs), output


def _fresh_copy(template: Path | None, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    if template is not None:
        shutil.copyfile(template, target)


def _same_file(a: Path, b: Path) -> bool:
    with open(a, "rb") as left, open(b, "rb") as right:
        while True:
            x, y = left.read(1 << 20), right.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


if __name__ == "__main__":
    main()
