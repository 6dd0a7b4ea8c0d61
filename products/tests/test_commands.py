"""The manage.py commands: import, export, cache warm-up / clear / info, demo data."""

from __future__ import annotations

import io
import json
import os
import pty
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command

from products import cache
from products.models import Product
from products.selectors import product_json
from products.services import importing

from .support.cache_state import reset_process_state
from .support.processes import BASE_DIR, manage, migrate, server_env

TRICKY = [
    ("Plain", "19.99", 5),
    ("Comma, quote \" and 'apostrophe'", "0.10", 0),
    ("Ünïcødé ☕ 茶", "9999999999.99", 2_147_483_647),
    ("Zero", "0.00", 1),
    ("Line\u2028separator-free, tab-free name", "1.01", 3),
    ("=SUM(A1)", "100.00", 7),
    ("A" * 200, "12.30", 12),
]


def run(command: str, *args: str, **options) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(command, *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def catalogue() -> set[tuple[str, Decimal, int]]:
    return set(Product.objects.values_list("name", "price", "quantity"))


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


# --- import_products ------------------------------------------------------------------


def test_a_summary_rate_below_ten_keeps_two_digits():
    # A slow 2-row import (a pipe that trickles) said "0 rows/s".
    from products.management.commands._common import rate

    rates = [0.0, 0.04, 0.4, 9.94, 10.4, 40461.2]
    assert [rate(r) for r in rates] == ["0", "0.04", "0.4", "9.9", "10", "40,461"]


def test_import_creates_updates_and_leaves_unchanged_rows_alone(make_product, tmp_path):
    same = make_product("Same", "1.00", 1)
    changed = make_product("Changed", "2.00", 2)
    path = write(tmp_path, "p.csv", "name,price,quantity\nSame,1.00,1\nChanged,2.50,2\n  New  ,3,0\n")

    out, _ = run("import_products", str(path))

    assert "created 1, updated 1, unchanged 1, failed 0" in out
    assert catalogue() == {
        ("Same", Decimal("1.00"), 1),
        ("Changed", Decimal("2.50"), 2),
        ("New", Decimal("3.00"), 0),
    }
    same_after = Product.objects.get(name="Same")
    assert same_after.updated_at == same.updated_at  # untouched
    assert Product.objects.get(name="Changed").updated_at > changed.updated_at


def test_import_without_quantity_keeps_stock_and_new_products_start_at_zero(make_product, tmp_path):
    make_product("Mug", "3.00", 40)
    path = write(tmp_path, "prices.csv", "name,price\nMug,3.50\nBowl,4.00\n")
    run("import_products", str(path))
    assert catalogue() == {("Mug", Decimal("3.50"), 40), ("Bowl", Decimal("4.00"), 0)}


def test_an_empty_quantity_cell_is_a_quantity_left_out(make_product, tmp_path):
    # A spreadsheet's price list with blank stock cells (a review saw it refused).
    make_product("Mug", "3.00", 40)
    path = write(tmp_path, "prices.csv", "name,price,quantity\nMug,3.50,\nBowl,4.00,  \nCup,1.00,7\n")
    run("import_products", str(path))
    assert catalogue() == {
        ("Mug", Decimal("3.50"), 40),
        ("Bowl", Decimal("4.00"), 0),
        ("Cup", Decimal("1.00"), 7),
    }


@pytest.mark.parametrize("name", ["p.jsonl", "p.json"])
def test_a_null_quantity_is_refused_as_the_api_refuses_it(make_product, tmp_path, name):
    # Left out, the quantity keeps the stock; null is a value, and not a quantity.
    make_product("Mug", "3.00", 40)
    rows = [
        {"name": "Mug", "price": "3.50", "quantity": None},
        {"name": "Bowl", "price": "4", "quantity": None},
    ]
    content = json.dumps(rows) if name == "p.json" else "".join(json.dumps(row) + "\n" for row in rows)
    err = io.StringIO()
    with pytest.raises(CommandError, match="nothing was written"):
        call_command("import_products", str(write(tmp_path, name, content)), stdout=io.StringIO(), stderr=err)
    assert err.getvalue().count("quantity: This field may not be null.") == 2, err.getvalue()
    assert catalogue() == {("Mug", Decimal("3.00"), 40)}


def test_dry_run_reports_changes_and_writes_nothing(make_product, tmp_path):
    make_product("Mug", "3.00", 40)
    path = write(tmp_path, "p.jsonl", '{"name": "Mug", "price": 3.5}\n{"name": "Bowl", "price": "4"}\n')
    out, _ = run("import_products", str(path), "--dry-run")
    assert "Dry run, nothing written" in out
    assert "created 1, updated 1, unchanged 0, failed 0" in out
    assert catalogue() == {("Mug", Decimal("3.00"), 40)}


@pytest.mark.parametrize("batch_size", ["1", "7", "5000"])
def test_import_json_array_across_batches_and_read_chunks(db, tmp_path, batch_size):
    # ~200 KB: the streamed array crosses several 64 KB read chunks.
    records = [
        {"name": f"Item {i:05d} " + "x" * 40, "price": f"{i}.{i % 100:02d}", "quantity": i}
        for i in range(3000)
    ]
    path = write(tmp_path, "p.json", json.dumps(records, indent=1))
    out, _ = run("import_products", str(path), "--batch-size", batch_size)
    assert "created 3000, updated 0, unchanged 0, failed 0" in out
    assert Product.objects.get(name="Item 02999 " + "x" * 40).price == Decimal("2999.99")


def test_import_reads_stdin_with_format(db):
    stdin = io.BytesIO(b'{"name": "Lamp", "price": "30", "quantity": 2}\n')
    out, _ = run("import_products", "-", "--format", "jsonl", stdin=stdin)
    assert "created 1" in out
    assert catalogue() == {("Lamp", Decimal("30.00"), 2)}


def test_import_accepts_a_byte_order_mark_and_header_case(db, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffName, Price ,QUANTITY\r\nTeapot,12.5,3\r\n".encode())
    run("import_products", str(path))
    assert catalogue() == {("Teapot", Decimal("12.50"), 3)}


# --- export_products and the round trip ----------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_export_then_import_into_an_empty_database_reproduces_every_product(db, tmp_path, fmt):
    for name, price, quantity in TRICKY:
        Product.objects.create(name=name, price=price, quantity=quantity)
    before = catalogue()
    path = tmp_path / f"all.{fmt}"

    out, _ = run("export_products", "-o", str(path))
    assert f"Exported {len(TRICKY)} product(s)" in out

    Product.objects.all().delete()
    run("import_products", str(path))
    assert catalogue() == before
    # The export prints prices with exactly two places, never a float.
    assert "9999999999.99" in path.read_text(encoding="utf-8")


def test_export_to_stdout_in_each_format(make_product):
    make_product("Mug", "3.50", 4)
    csv_out, summary = run("export_products")
    assert csv_out == "name,price,quantity\nMug,3.50,4\n"
    assert "Exported 1 product(s)" in summary  # on stderr, so stdout stays pure data
    json_out, _ = run("export_products", "--format", "json")
    assert json.loads(json_out) == [{"name": "Mug", "price": "3.50", "quantity": 4}]
    jsonl_out, _ = run("export_products", "--format", "jsonl")
    assert [json.loads(line) for line in jsonl_out.splitlines()] == [
        {"name": "Mug", "price": "3.50", "quantity": 4}
    ]


@pytest.mark.parametrize("fmt, expected", [("csv", "name,price,quantity\n"), ("json", "[]\n"), ("jsonl", "")])
def test_export_of_an_empty_catalogue_imports_back_as_nothing(db, tmp_path, fmt, expected):
    path = tmp_path / f"none.{fmt}"
    run("export_products", "-o", str(path))
    assert path.read_text() == expected
    out, _ = run("import_products", str(path))
    assert "created 0, updated 0, unchanged 0, failed 0" in out


def test_export_in_small_chunks_keeps_order_and_rows(db, tmp_path):
    Product.objects.bulk_create(Product(name=f"P{i:03d}", price="1.00", quantity=i) for i in range(25))
    path = tmp_path / "p.csv"
    run("export_products", "-o", str(path), "--chunk-size", "4")
    lines = path.read_text().splitlines()
    assert lines[0] == "name,price,quantity" and len(lines) == 26
    assert lines[1:3] == ["P000,1.00,0", "P001,1.00,1"]


def test_export_file_gets_ordinary_permissions_and_keeps_existing_ones(make_product, tmp_path):
    make_product("Mug")
    fresh = tmp_path / "fresh.csv"
    umask = os.umask(0o022)
    try:
        run("export_products", "-o", str(fresh))
    finally:
        os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # not the temp file's private 0600
    existing = tmp_path / "existing.csv"
    existing.write_text("old")
    existing.chmod(0o640)
    run("export_products", "-o", str(existing))
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640
    assert existing.read_text().startswith("name,price,quantity\n")


def test_export_writes_into_a_named_pipe_and_a_symlink_without_replacing_them(make_product, tmp_path):
    make_product("Mug", "3.50", 4)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_text()))
    reader.start()
    run("export_products", "-o", str(pipe))
    reader.join(timeout=10)
    assert received == ["name,price,quantity\nMug,3.50,4\n"]
    assert stat.S_ISFIFO(pipe.stat().st_mode)  # still a pipe, not replaced by a file

    target = tmp_path / "real.csv"
    target.write_text("")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    out, err = run("export_products", "-o", str(link))
    assert link.is_symlink() and target.read_text() == "name,price,quantity\nMug,3.50,4\n"
    # -o /dev/stdout is such a link: the summary must not land in the data.
    assert out == "" and "Exported 1 product(s)" in err and str(link) in err


def test_export_to_an_unwritable_place_is_a_clear_error(db, tmp_path):
    with pytest.raises(CommandError, match="cannot write"):
        run("export_products", "-o", str(tmp_path / "missing-dir" / "p.csv"))


def test_export_to_a_file_named_for_another_format_is_refused_unless_the_format_is_given(db, tmp_path):
    target = tmp_path / "products.xml"
    with pytest.raises(CommandError, match="cannot tell the format from the file name"):
        run("export_products", "-o", str(target))
    assert not target.exists()
    run("export_products", "-o", str(target), "--format", "csv")
    assert target.read_text() == "name,price,quantity\n"
    run("export_products", "-o", str(tmp_path / "products"))  # no extension: CSV, as documented
    assert (tmp_path / "products").read_text() == "name,price,quantity\n"


# --- Imports keep the cache honest (real Redis, committed transactions) -----------------------


@pytest.mark.django_db(transaction=True)
def test_import_invalidates_a_cached_product(tmp_path):
    Product.objects.create(name="Mug", price="3.00", quantity=1)
    assert cache.get_product("Mug", product_json).hit is False
    assert cache.get_product("Mug", product_json).hit is True  # now cached

    run("import_products", str(write(tmp_path, "p.csv", "name,price,quantity\nMug,4.25,9\n")))

    fresh = cache.get_product("Mug", product_json)
    assert fresh.hit is False
    assert json.loads(fresh.data)["price"] == "4.25"
    assert json.loads(fresh.data)["quantity"] == 9


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_during_the_commit_lets_the_import_and_its_invalidation_finish(tmp_path, monkeypatch):
    from django.db import transaction

    Product.objects.create(name="Mug", price="3.00", quantity=1)
    cache.get_product("Mug", product_json)
    assert cache.get_product("Mug", product_json).hit is True
    real_invalidate_on_commit = importing.cache.invalidate_on_commit

    def ctrl_c_first(names, **kwargs):
        # Ctrl-C reaches the process after the COMMIT, before the invalidation.
        transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGINT), **kwargs)
        real_invalidate_on_commit(names, **kwargs)

    monkeypatch.setattr(importing.cache, "invalidate_on_commit", ctrl_c_first)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as stopped:
        call_command(
            "import_products",
            str(write(tmp_path, "p.csv", "name,price,quantity\nMug,4.25,9\n")),
            stdout=out,
            stderr=err,
        )

    assert stopped.value.code == 130
    assert "Imported" in out.getvalue()
    assert (
        err.getvalue().strip()
        == "Interrupted during the commit, which finished first: the import above is complete."
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    fresh = cache.get_product("Mug", product_json)
    assert fresh.hit is False  # the invalidation ran
    assert json.loads(fresh.data)["price"] == "4.25"


@pytest.mark.django_db(transaction=True)
def test_large_import_retires_the_cache_generation(tmp_path, monkeypatch):
    monkeypatch.setattr(importing, "INVALIDATE_BY_NAME_LIMIT", 2)
    for name in ("A", "B", "C"):
        Product.objects.create(name=name, price="1.00", quantity=1)
        cache.get_product(name, product_json)
    generation = cache.info()["generation"]

    run("import_products", str(write(tmp_path, "p.csv", "name,price\nA,2.00\nB,2.00\nC,2.00\nD,2.00\n")))

    assert cache.info()["generation"] != generation
    for name in ("A", "B", "C"):
        product = cache.get_product(name, product_json)
        assert product.hit is False and json.loads(product.data)["price"] == "2.00"


@pytest.mark.django_db(transaction=True)
def test_failed_import_leaves_the_cache_alone(tmp_path):
    Product.objects.create(name="Mug", price="3.00", quantity=1)
    cache.get_product("Mug", product_json)
    with pytest.raises(CommandError):
        run("import_products", str(write(tmp_path, "p.csv", "name,price\nMug,4.00\nBad,-1\n")))
    cached = cache.get_product("Mug", product_json)
    assert cached.hit is True and json.loads(cached.data)["price"] == "3.00"


# --- Cache commands ---------------------------------------------------------------------------


def test_warm_all_caches_every_product(make_product, django_assert_num_queries):
    for i in range(5):
        make_product(f"P{i}", "1.00", i)
    out, _ = run("warm_product_cache", "--all")
    assert "Warmed 5 product(s)" in out
    assert cache.info()["cached_products"] == 5
    with django_assert_num_queries(0):
        product = cache.get_product("P3", product_json)
    assert product.hit is True
    # The warm-up stores exactly what a read-through would.
    assert product.data == product_json("P3")


def test_warm_named_products_and_report_unknown_names(make_product):
    make_product("Mug")
    make_product("Bowl")
    with pytest.raises(CommandError, match="1 name\\(s\\) not found"):
        run("warm_product_cache", "Mug", "Ghost")
    assert cache.get_product("Mug", product_json).hit is True
    assert cache.info()["cached_products"] == 1


@pytest.mark.parametrize("args", [(), ("--all", "Mug")])
def test_warm_needs_names_or_all(db, args):
    with pytest.raises(CommandError, match="NAME"):
        run("warm_product_cache", *args)


# Names whose value keys end like the keys clear() keeps, or hold the sign-in counters' marker.
LOOK_ALIKE_NAMES = ("ends}:gen", "ends}:srv", "x:throttle:authfail:y")


def test_clear_removes_only_this_services_product_keys(make_product):
    for name in ("Mug", *LOOK_ALIKE_NAMES):
        make_product(name)
        cache.get_product(name, product_json)
    foreign = redis.Redis.from_url(settings.REDIS_URL)
    foreign_key = f"someone-else:{settings.CACHES['default']['KEY_PREFIX']}:keep-me"
    foreign.set(foreign_key, b"precious", ex=60)
    try:
        out, _ = run("clear_product_cache")
        assert "Deleted" in out
        assert cache.info()["cached_products"] == 0
        for name in ("Mug", *LOOK_ALIKE_NAMES):
            assert cache.get_product(name, product_json).hit is False, name
        assert foreign.get(foreign_key) == b"precious"
    finally:
        foreign.delete(foreign_key)


def test_cache_info_reports_cached_products_and_memory(make_product):
    make_product("Mug")
    make_product("Bowl")
    cache.get_product("Mug", product_json)
    cache.get_product("Bowl", product_json)
    out, _ = run("product_cache_info")
    assert "Cached products:    2" in out
    assert "Redis memory used:" in out and "bytes" in out


@pytest.fixture
def dead_redis(settings):
    """Point the cache at a port where nothing listens."""
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "LOCATION": "redis://127.0.0.1:1/0"}
    settings.CACHES = caches
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    reset_process_state()
    yield
    reset_process_state()


@pytest.mark.parametrize(
    "args", [("clear_product_cache",), ("product_cache_info",), ("warm_product_cache", "--all")]
)
def test_cache_commands_fail_clearly_when_redis_is_down(db, dead_redis, args):
    with pytest.raises(
        CommandError,
        match=r"Redis at 127\.0\.0\.1:1 \(REDIS_URL\) is unavailable",
    ):
        run(*args)


def test_cache_commands_say_why_redis_refused_them(db, private_redis, settings):
    # Redis answers, but refuses the connection's password: not "not answering".
    private_redis.client().config_set("requirepass", "right-password")
    url = f"redis://:wrong-password@127.0.0.1:{private_redis.port}/0"
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"], "LOCATION": url}}
    settings.REDIS_URL = url
    reset_process_state()
    with pytest.raises(CommandError) as refused:
        run("clear_product_cache")
    message = str(refused.value)
    assert f"Redis at 127.0.0.1:{private_redis.port} (REDIS_URL) is unavailable (" in message
    assert "password" in message and "wrong-password" not in message
    assert message.endswith(
        "nothing was cleared. Start Redis or fix that setting, then run the command again."
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, said",
    [
        (("warm_product_cache", "--all"), "Warmed 3 product(s)."),
        (("clear_product_cache",), "Deleted "),
        (("product_cache_info",), "Cached products: "),
    ],
)
@pytest.mark.hangs_redis
def test_cache_commands_wait_out_a_redis_that_stalls_briefly(db, private_redis, args, said):
    # A busy Redis or machine can miss the requests' 0.1 s socket timeout now
    # and then; a bulk command tries again for a few seconds (a review saw a
    # warm-up of 300,000 products fail at load average 18).
    for number in range(3):
        Product.objects.create(name=f"Stall {number}", price=Decimal("1.00"), quantity=1)
    private_redis.pause()
    resume = threading.Timer(0.6, private_redis.resume)
    resume.start()
    began = time.monotonic()
    try:
        out, _ = run(*args)
    finally:
        resume.join()
    assert said in out
    assert 0.5 < time.monotonic() - began < 5


@pytest.mark.slow
@pytest.mark.hangs_redis
def test_a_warm_up_that_redis_stops_answering_says_how_far_it_got(db, private_redis, monkeypatch):
    from products import transport
    from products.management.commands._common import redis_down_message
    from products.services.warming import WarmUpStopped, product_cache_warm

    for number in range(5):
        Product.objects.create(name=f"Part {number}", price=Decimal("1.00"), quantity=1)
    # The creates' invalidations have production's 0.1 s: one missed on a
    # loaded machine left the breaker open and the warm-up refused to start.
    reset_process_state()
    chunks = []

    def stall_after_the_first_chunk(done: int) -> None:
        chunks.append(done)
        if len(chunks) == 1:
            # Short patience for the stall only: before it, the status check
            # and the first chunk wait out a loaded machine as the command does.
            monkeypatch.setattr(transport, "BULK_PATIENCE", 0.3)
            private_redis.pause()

    try:
        with pytest.raises(WarmUpStopped) as stopped:
            product_cache_warm(chunk_size=2, on_progress=stall_after_the_first_chunk)
    finally:
        private_redis.resume()
    assert stopped.value.stored == 2
    assert private_redis.client().dbsize() > 0  # the first chunk's two products stay cached
    said = redis_down_message("2 product(s) were warmed", stopped.value)
    assert "(Timeout reading from socket)" in said, said  # the RedisError under the CacheUnavailable


def test_cache_info_still_counts_the_pending_invalidations_while_redis_is_down(db, dead_redis):
    from products.models import PendingInvalidation

    PendingInvalidation.objects.create(names=["Mug"])
    out = io.StringIO()
    with pytest.raises(CommandError, match="is unavailable"):
        call_command("product_cache_info", stdout=out, stderr=io.StringIO())
    assert "Pending invalidations: 1 (oldest " in out.getvalue()


# --- seed_products -------------------------------------------------------------------------------


def test_seed_is_deterministic_and_idempotent(db):
    out, _ = run("seed_products", "30", "--seed", "4", "--batch-size", "7")
    assert "created 30" in out
    first = catalogue()
    out, _ = run("seed_products", "30", "--seed", "4")
    assert "created 0, updated 0, unchanged 30" in out
    Product.objects.all().delete()
    run("seed_products", "30", "--seed", "4")
    assert catalogue() == first
    assert len({name for name, _, _ in first}) == 30
    Product.objects.all().delete()
    run("seed_products", "30", "--seed", "5")
    assert catalogue() != first


def test_seed_refuses_a_negative_count(db):
    with pytest.raises(CommandError, match="N must be 0 or more"):
        run("seed_products", "-3")


def test_seed_refuses_a_negative_seed(db):
    # An audit: Python seeds by the absolute value, so --seed -1 gave the
    # products of --seed 1, against "another seed gives other products".
    with pytest.raises(CommandError, match="--seed must be 0 or more"):
        run("seed_products", "3", "--seed", "-1")
    assert not Product.objects.exists()


# --- As a user runs them: real processes, exit codes, pipes -----------------------------------------


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Run manage.py in a subprocess against its own migrated SQLite file."""
    db_path = tmp_path_factory.mktemp("cli") / "cli.sqlite3"
    env = server_env(DATABASE_URL=f"sqlite:///{db_path}")

    def run_manage(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return manage(env, *args, input=input)

    assert run_manage("migrate", "-v", "0").returncode == 0
    return run_manage


@pytest.mark.slow
@pytest.mark.database_independent
def test_cli_pipe_import_export_and_exit_codes(cli):
    ok = cli("import_products", "-", "--format", "csv", input="name,price,quantity\nPiped,1.25,3\n")
    assert ok.returncode == 0, ok.stderr
    assert "created 1" in ok.stdout

    bad = cli(
        "import_products", "-", "--format", "csv", input="name,price,quantity\nOther,2.00,1\nPiped,1.999,3\n"
    )
    assert bad.returncode == 1
    assert "line 3: price: Price must have at most 2 decimal places" in bad.stderr
    assert "CommandError" in bad.stderr and "Traceback" not in bad.stderr

    missing = cli("import_products", "/no/such/file.csv")
    assert missing.returncode == 1 and "no such file" in missing.stderr

    exported = cli("export_products")
    assert exported.returncode == 0
    assert exported.stdout == "name,price,quantity\nPiped,1.25,3\n"


@pytest.mark.slow
@pytest.mark.database_independent
def test_cli_standard_streams_that_fail_are_one_line_saying_what_stands(tmp_path):
    """A full disk or a closed stream on stdin/stdout: one CommandError line, exit 1, never a traceback."""
    env = server_env(DATABASE_URL=f"sqlite:///{tmp_path / 'streams.sqlite3'}")
    migrate(env)
    rows = tmp_path / "rows.csv"
    rows.write_text("name,price,quantity\nFullDisk,1.25,3\n")

    def run(*args: str, stdout=None, close: int | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            preexec_fn=None if close is None else lambda: os.close(close),  # starts with it closed
        )

    stands = {
        ("import_products", str(rows)): "the import itself is complete (created 1,",
        ("export_products",): "the export on standard output is incomplete",
        ("create_editor", "streams"): "the editor is saved: run the command again to print its token",
    }
    for args, what in stands.items():
        with open("/dev/full", "w") as full:
            result = run(*args, stdout=full)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert f"could not write to standard output (No space left on device); {what}" in result.stderr
    assert "FullDisk,1.25,3" in manage(env, "export_products").stdout
    assert manage(env, "create_editor", "streams").stdout.strip()  # its token, printed this time

    closed_stdout = run("export_products", close=1)
    assert closed_stdout.returncode == 1 and "Traceback" not in closed_stdout.stderr
    assert "could not write to standard output (it is closed)" in closed_stdout.stderr

    closed_stdin = run("import_products", "-", "--format", "csv", stdout=subprocess.DEVNULL, close=0)
    assert closed_stdin.returncode == 1 and "Traceback" not in closed_stdin.stderr
    assert "standard input is closed" in closed_stdin.stderr


@pytest.mark.database_independent
def test_cli_cache_commands_without_redis_exit_non_zero_with_one_line(tmp_path):
    # One line: the CommandError with its reason. An audit saw the
    # transport's log line before it too ("Redis unavailable ...; products
    # are read from the database, and Redis is tried again every 1.0s").
    env = server_env(DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}", REDIS_URL="redis://127.0.0.1:1/0")
    assert manage(env, "migrate", "-v", "0").returncode == 0
    for args in (("clear_product_cache",), ("product_cache_info",), ("warm_product_cache", "--all")):
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("CommandError: Redis at 127.0.0.1:1 (REDIS_URL) is unavailable"), lines


@pytest.mark.slow
@pytest.mark.database_independent
def test_cli_commands_on_an_unmigrated_or_unreachable_database_say_so_without_traceback(tmp_path):
    def run_on(database_url: str, *args: str) -> subprocess.CompletedProcess:
        return manage(server_env(DATABASE_URL=database_url), *args)

    empty = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    for args in (
        ("create_editor", "alice"),
        ("export_products",),
        ("seed_products", "3"),
        ("product_cache_info",),
    ):
        result = run_on(empty, *args)
        assert result.returncode == 1, (args, result.stderr)
        assert "manage.py migrate" in result.stderr and "Traceback" not in result.stderr, (
            args,
            result.stderr,
        )
    down = run_on("postgres://postgres@127.0.0.1:1/none", "create_editor", "alice")
    assert down.returncode == 1 and "DATABASE_URL" in down.stderr and "Traceback" not in down.stderr
    # A database that is down needs no migrate (the message said so to any failure).
    assert "the database is up" in down.stderr and "migrate" not in down.stderr, down.stderr


@pytest.mark.slow
@pytest.mark.database_independent
def test_cli_data_commands_refuse_a_bad_redis_setting_instead_of_using_the_default_redis(tmp_path):
    # The settings fall back to redis://127.0.0.1:6379/0 for `check` to report
    # the mistake; a command that skips the checks must not write products
    # and invalidate them in that other Redis (the service's cache would stay stale).
    env = server_env(DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}", REDIS_SENTINELS="sentinel1")
    env.pop("REDIS_URL", None)
    for args in (
        ("import_products", "-", "--format", "csv"),
        ("create_editor", "alice"),
        ("seed_products", "2"),
    ):
        result = manage(env, *args, input="name,price,quantity\nNever,1.00,1\n")
        assert result.returncode == 1, (args, result.stderr)
        assert "REDIS_SENTINELS" in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)


# --- Progress: a bar on a terminal, nothing extra when piped ---------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_only(db, capsys):
    call_command("seed_products", "300", "--batch-size", "100", stdout=io.StringIO(), stderr=Terminal())
    bar = capsys.readouterr().err  # tqdm draws on the real stderr
    assert "/300 [" in bar and "rows/s" in bar
    piped = io.StringIO()
    call_command("seed_products", "300", "--seed", "9", stdout=io.StringIO(), stderr=piped)
    assert piped.getvalue() == "" and "rows" not in capsys.readouterr().err


@pytest.mark.database_independent
def test_progress_bar_on_a_terminal_that_reports_no_size(tmp_path):
    """A pseudo-terminal opened without a window size is a terminal too (pty.openpty(), `script` in CI).

    Its size reads as 0 rows x 0 columns, and tqdm left to measure it drew nothing at all.
    """
    env = server_env(DATABASE_URL=f"sqlite:///{tmp_path / 'bar.sqlite3'}")
    migrate(env)
    primary, secondary = pty.openpty()  # the kernel's default window size: 0 x 0
    try:
        seeder = subprocess.Popen(
            [sys.executable, "manage.py", "seed_products", "300", "--batch-size", "100"],
            cwd=BASE_DIR,
            env=env,
            stdin=secondary,
            stdout=secondary,
            stderr=secondary,
        )
        os.close(secondary)
        output = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert seeder.wait(timeout=60) == 0, output
    finally:
        os.close(primary)
    assert b"/300 [" in output and b"rows/s" in output, output
    assert b"Seeded 300 demo product(s)" in output, output


@pytest.mark.slow
@pytest.mark.database_independent
def test_ctrl_c_during_an_import_is_one_line_and_writes_nothing(tmp_path):
    db_path = tmp_path / "interrupted.sqlite3"
    env = server_env(DATABASE_URL=f"sqlite:///{db_path}")
    assert manage(env, "migrate", "-v", "0").returncode == 0
    importer = subprocess.Popen(
        [sys.executable, "manage.py", "import_products", "-", "--format", "csv", "--batch-size", "100"],
        cwd=BASE_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        importer.stdin.write("name,price,quantity\n" + "".join(f"Row {i},1.00,1\n" for i in range(1000)))
        importer.stdin.flush()
        # Wait until the import has written inside its transaction: it then
        # holds SQLite's write lock, and another writer cannot begin.
        deadline = time.monotonic() + 30
        while True:
            probe = sqlite3.connect(db_path, timeout=0)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.rollback()
            except sqlite3.OperationalError:
                break
            finally:
                probe.close()
            assert time.monotonic() < deadline, "the import never started writing"
            time.sleep(0.05)
        importer.send_signal(signal.SIGINT)  # the stdin pipe stays open: the import is mid-way
        _, stderr = importer.communicate(timeout=30)
    finally:
        if importer.poll() is None:
            importer.kill()
    assert importer.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert (
        stderr.strip()
        == "Interrupted: nothing was imported (the import runs in one transaction, rolled back)."
    )
    with sqlite3.connect(db_path) as check:
        assert check.execute("SELECT COUNT(*) FROM products_product").fetchone() == (0,)


def test_ctrl_c_is_one_line_even_when_the_driver_could_not_clean_up_after_it(
    db, tmp_path, monkeypatch, caplog
):
    # On PostgreSQL, Ctrl-C inside an import's pipeline made psycopg warn
    # "error ignored terminating <psycopg.Pipeline ...>: pipeline aborted"
    # before the command's own line (2 of 6 interrupts in a review).
    import logging

    from products.management.commands import import_products

    def interrupted_mid_pipeline(**kwargs):
        logging.getLogger("psycopg").warning(
            "error ignored terminating %r: %s", "<Pipeline>", "pipeline aborted"
        )
        logging.getLogger("psycopg.transaction").warning("error ignored in rollback of %s: %s", "<T>", "gone")
        raise KeyboardInterrupt

    monkeypatch.setattr(import_products, "product_import_file", interrupted_mid_pipeline)
    path = write(tmp_path, "p.csv", "name,price\nMug,1.00\n")
    err = io.StringIO()
    with pytest.raises(SystemExit) as stopped:
        call_command("import_products", str(path), stdout=io.StringIO(), stderr=err)
    assert stopped.value.code == 130
    assert (
        err.getvalue().strip()
        == "Interrupted: nothing was imported (the import runs in one transaction, rolled back)."
    )
    assert not [r for r in caplog.records if r.getMessage().startswith("error ignored")]
    # Outside a command, psycopg's warnings are as they were.
    logging.getLogger("psycopg").warning("error ignored terminating %r: %s", "<Pipeline>", "after")
    assert [r.getMessage() for r in caplog.records] == ["error ignored terminating '<Pipeline>': after"]


def _wait_for_cpu_time(pid: int, seconds: float) -> None:
    """Wait until process ``pid`` has run ``seconds`` of CPU time (or ended).

    CPU time, not wall time: on a loaded machine 50 ms of wall time can end
    before Python has imported ``site``, where a Ctrl-C is Python's own fatal
    error ("init_import_site"), before any code of ours runs.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return
        if fields[0] == "Z" or (int(fields[11]) + int(fields[12])) / ticks >= seconds:
            return
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.database_independent
@pytest.mark.parametrize("after", [0.05, 0.2, 0.4])
def test_ctrl_c_while_the_command_starts_is_one_line_too(tmp_path, after):
    # Django's set-up and the imports take most of the first second; a
    # Ctrl-C then came out as a traceback of 40-80 lines.
    env = server_env(DATABASE_URL=f"sqlite:///{tmp_path / 'unused.sqlite3'}")
    command = subprocess.Popen(
        [sys.executable, "manage.py", "export_products"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_cpu_time(command.pid, after)
        command.send_signal(signal.SIGINT)
        _, stderr = command.communicate(timeout=30)
    finally:
        if command.poll() is None:
            command.kill()
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert command.returncode == 130, stderr
    assert stderr.strip() in ("Interrupted.", "Interrupted: the export on standard output is incomplete.")


@pytest.mark.django_db(transaction=True)
def test_an_import_on_a_redis_server_never_seen_before_reaches_it(private_redis, tmp_path):
    # A new (or restarted) Redis is adopted by recording it in the database,
    # which cannot happen inside the import's transaction: the first import
    # after a restart reported its invalidation as missed, and left it in the
    # outbox for a server process to apply.
    from products.models import PendingInvalidation

    _, err = run("import_products", str(write(tmp_path, "p.csv", "name,price\nMug,2.00\nCup,3.00\n")))
    assert "Could not reach Redis" not in err, err
    assert not PendingInvalidation.objects.exists()
    assert cache.get_product("Mug", product_json).hit is False  # the cache works from here
    assert cache.get_product("Mug", product_json).hit is True


@pytest.mark.slow
@pytest.mark.parametrize(
    "args", [("migrate", "--noinput"), ("createsuperuser", "--noinput", "--username", "x")]
)
def test_djangos_own_commands_on_an_unreachable_database_say_so_in_one_line(args):
    # Before, migrate (the first command of docs/production.md) printed ~30
    # lines of traceback ending in OperationalError.
    from .support.processes import free_port

    env = server_env(DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nowhere")
    done = manage(env, *args)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("CommandError: the database is not usable (OperationalError: ")
    assert len(done.stderr.strip().splitlines()) == 1
    # --traceback still gives one, for whoever asks.
    assert "Traceback" in manage(env, *args, "--traceback").stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, says_nothing_written",
    [(("export_products",), False), (("product_cache_info",), False), (("seed_products", "3"), True)],
)
def test_a_database_error_says_nothing_was_written_only_for_commands_that_write(args, says_nothing_written):
    from .support.processes import free_port

    env = server_env(DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nowhere")
    done = manage(env, *args)
    assert done.returncode == 1 and "the database is not usable" in done.stderr
    assert ("nothing was written" in done.stderr) is says_nothing_written
