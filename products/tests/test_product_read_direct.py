"""A cache miss's database read: the direct SQLite read gives Django's bytes, and steps aside when it must.

products.selectors.product_json runs its compiled query on the sqlite3
connection itself (SQLite, UTC) and otherwise through Django's cursor. These
tests compare the two on the real test database, and check each condition
that hands the read back to Django.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from products import selectors
from products.checks import check_direct_product_read
from products.models import Product
from products.selectors import product_json
from products.serializers import ProductSerializer

ON_SQLITE = connection.vendor == "sqlite"


@pytest.fixture
def direct_reads(monkeypatch) -> list[str]:
    """The names the direct read served (the real function, counted)."""
    served: list[str] = []
    real = selectors._read_direct

    def counted(conn, sql, name):
        served.append(name)
        return real(conn, sql, name)

    monkeypatch.setattr(selectors, "_read_direct", counted)
    return served


def through_django(name: str) -> bytes | None:
    # Logging queries (as DEBUG and assertNumQueries do) sends the read through Django's cursor.
    with CaptureQueriesContext(connection) as queries:
        data = product_json(name)
    assert len(queries) == 1
    return data


@pytest.mark.django_db
def test_the_direct_read_gives_the_bytes_django_gives(direct_reads):
    odd_times = [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds: isoformat leaves them out
        datetime(2026, 11, 26, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    prices = ["0.01", "0.10", "2.67", "2.68", "19.99", "1000.00", "99999.99"]
    for index, price in enumerate(prices):
        product = Product.objects.create(name=f"p{index}", price=Decimal(price), quantity=index)
        stamp = odd_times[index % 2]
        Product.objects.filter(pk=product.pk).update(created_at=stamp, updated_at=stamp)
    Product.objects.create(name="Ünïcode ☕ name", price=Decimal("3.50"), quantity=0)
    names = [*(f"p{i}" for i in range(len(prices))), "Ünïcode ☕ name", "absent"]

    direct = [product_json(name) for name in names]
    django = [through_django(name) for name in names]

    assert direct == django
    assert direct[-1] is None
    assert b'"price":"0.10"' in direct[1] and b'"created_at":"2026-11-26T23:59:59.999999Z"' in direct[1]
    assert b'"created_at":"2026-01-02T03:04:05Z"' in direct[0]
    assert direct_reads == (names if ON_SQLITE else [])


@pytest.mark.django_db
def test_timestamps_written_outside_django_read_as_django_and_the_serializer_give_them(direct_reads):
    stored = {
        "utc-offset": ("2026-01-02 03:04:05+00:00", "2026-01-02T03:04:05Z"),
        "zulu": ("2026-01-02 03:04:05.250000Z", "2026-01-02T03:04:05.250000Z"),
        "plus-two": ("2026-01-02 03:04:05+02:00", "2026-01-02T01:04:05Z"),
    }
    for name, (text, _) in stored.items():
        Product.objects.create(name=name, price=Decimal("1.00"), quantity=1)
        with connection.cursor() as cursor:  # as a script or the sqlite3 shell would write it
            cursor.execute("UPDATE products_product SET created_at = %s WHERE name = %s", [text, name])
    for name, (_, expected) in stored.items():
        direct = product_json(name)
        assert direct == through_django(name)
        assert orjson.loads(direct)["created_at"] == expected
        assert (
            orjson.loads(direct)["created_at"]
            == ProductSerializer(Product.objects.get(name=name)).data["created_at"]
        )
    assert direct_reads == (list(stored) if ON_SQLITE else [])


@pytest.mark.django_db
def test_a_read_in_a_failed_transaction_raises_what_django_raises(make_product, direct_reads):
    make_product("Held")
    with transaction.atomic():
        try:
            Product.objects.create(name="Held", price="1.00", quantity=1)  # unique name: fails
        except IntegrityError:
            pass
        assert connection.needs_rollback
        with pytest.raises(transaction.TransactionManagementError):
            product_json("Held")
    assert direct_reads == []


@pytest.mark.django_db
def test_another_execute_wrapper_sends_the_read_through_django(make_product, direct_reads):
    make_product("Wrapped")
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(params)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        assert b'"name":"Wrapped"' in product_json("Wrapped")
    assert seen == [["Wrapped"]]
    assert direct_reads == []


@pytest.mark.django_db
def test_a_database_error_is_djangos_error(make_product, direct_reads):
    make_product("Moved")
    product_json("Moved")  # compiled for this connection
    with transaction.atomic():
        # DDL is transactional on SQLite and PostgreSQL: the table is back once the block rolls back.
        with connection.cursor() as cursor:
            cursor.execute('ALTER TABLE "products_product" RENAME TO "products_elsewhere"')
        with pytest.raises(DatabaseError) as raised:
            product_json("Moved")
        transaction.set_rollback(True)
    assert type(raised.value).__module__ == "django.db.utils"  # not the driver's own exception
    assert direct_reads == (["Moved", "Moved"] if ON_SQLITE else [])
    assert b'"name":"Moved"' in product_json("Moved")


@pytest.mark.django_db
def test_without_utc_timestamps_sqlite_reads_through_django_and_check_says_so(
    settings, make_product, direct_reads
):
    make_product("Naive")
    assert check_direct_product_read(None) == []
    settings.USE_TZ = False
    messages = check_direct_product_read(None)
    if ON_SQLITE:
        assert [m.id for m in messages] == ["products.W040"]
        assert not selectors.direct_read_configured(connection)
    else:
        assert messages == []
    data = product_json("Naive")
    assert b'"name":"Naive"' in data and b"Z" not in data.split(b'"created_at":')[1][:40]
    assert direct_reads == []


@pytest.mark.django_db
def test_the_direct_read_can_be_turned_off_without_a_warning(settings, make_product, direct_reads):
    make_product("Off")
    settings.PRODUCT_SQLITE_DIRECT_READ = False
    assert check_direct_product_read(None) == []
    assert b'"name":"Off"' in product_json("Off")
    assert direct_reads == []
    settings.PRODUCT_SQLITE_DIRECT_READ = True
    product_json("Off")
    assert direct_reads == (["Off"] if ON_SQLITE else [])
