"""A write of an instance loaded before someone else renamed it forgets the name it overwrote."""

import threading
import time

import pytest
from django.db import connection, transaction

from products import cache
from products.models import Product
from products.selectors import product_json

pytestmark = pytest.mark.django_db(transaction=True)


def _read_in_another_thread(name: str):
    # The test's own thread is inside a transaction, where reads skip the cache.
    result = []

    def read() -> None:
        try:
            result.append(cache.get_product(name, product_json))
        finally:
            connection.close()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    return result[0]


def _rename_and_hold(pk: int, renamed: threading.Event) -> None:
    """Rename the row to "Cup" and hold its lock 0.3 s after the rename (the other write waits meanwhile)."""
    try:
        with transaction.atomic():
            row = Product.objects.select_for_update().get(pk=pk)
            row.name = "Cup"
            row.save()
            renamed.set()
            time.sleep(0.3)
    finally:
        connection.close()


@pytest.mark.parametrize("write", ["save", "delete"])
def test_a_write_that_waited_for_a_concurrent_rename_forgets_the_new_name(write):
    product = Product.objects.create(name="Mug", price="1.00", quantity=1)
    outdated = Product.objects.get(pk=product.pk)  # loaded before the rename
    renamed = threading.Event()

    renamer = threading.Thread(target=_rename_and_hold, args=(product.pk, renamed))
    renamer.start()
    assert renamed.wait(5)
    with transaction.atomic():
        if write == "save":
            outdated.price = "7.00"
            outdated.save()  # PostgreSQL: waits for the rename's lock, then writes "Mug" back
        else:
            outdated.delete()  # waits for the rename's lock, then deletes the row
        renamer.join()  # committed, and its invalidation of "Mug" and "Cup" is done
        # A reader meanwhile: "Cup" is still the row's committed name.
        assert _read_in_another_thread("Cup") is not None
    assert not Product.objects.filter(name="Cup").exists()
    assert cache.get_product("Cup", product_json) is None  # was: the renamed row, cached for 60 s


def test_an_upsert_on_the_primary_key_that_renames_forgets_the_old_name():
    product = Product.objects.create(name="Mug", price="1.00", quantity=1)
    assert cache.get_product("Mug", product_json) is not None
    assert cache.get_product("Mug", product_json).hit  # cached
    Product.objects.bulk_create(
        [Product(pk=product.pk, name="Cup", price="2.00", quantity=2)],
        update_conflicts=True,
        unique_fields=["id"],
        update_fields=["name", "price", "quantity"],
    )
    assert Product.objects.get(pk=product.pk).name == "Cup"
    assert cache.get_product("Mug", product_json) is None  # was: the old row, cached for 60 s
    assert b'"2.00"' in cache.get_product("Cup", product_json).data


def test_a_warm_up_of_every_product_reads_each_chunk_after_its_leases():
    # SQLite: the names' cursor, left open between chunks, held one read
    # snapshot, so a later chunk's rows came from before a write that
    # committed (and invalidated) meanwhile, under leases taken after it.
    from products.services.warming import product_cache_warm

    Product.objects.bulk_create([Product(name=f"p{i:02d}", price="1.00", quantity=1) for i in range(12)])
    written = []

    def write_once(count: int) -> None:
        if written:
            return

        def write() -> None:
            try:
                Product.objects.filter(name="p06").update(price="2.00")
            finally:
                connection.close()

        writer = threading.Thread(target=write)
        writer.start()
        writer.join()
        written.append(count)

    product_cache_warm(chunk_size=4, on_progress=write_once)
    assert written == [4]
    cached = cache.get_product("p06", product_json)
    assert cached.hit
    assert b'"2.00"' in cached.data  # was: "1.00", the row of before the write, for 60 s


def test_a_save_in_autocommit_that_waited_for_a_concurrent_rename_forgets_the_new_name():
    # SQLite: the save's UPDATE waits for the rename's write lock in the busy
    # handler, which sleeps up to 100 ms between tries; a reader that caches
    # the renamed row meanwhile must not keep it once the save wrote the old name back.
    product = Product.objects.create(name="Mug", price="1.00", quantity=1)
    outdated = Product.objects.get(pk=product.pk)
    renamed, rename_done, save_done = threading.Event(), threading.Event(), threading.Event()

    def rename() -> None:
        try:
            _rename_and_hold(product.pk, renamed)
        finally:
            rename_done.set()

    def save() -> None:
        assert renamed.wait(5)
        try:
            outdated.price = "7.00"
            outdated.save()  # autocommit
        finally:
            save_done.set()
            connection.close()

    threads = [threading.Thread(target=rename), threading.Thread(target=save)]
    for thread in threads:
        thread.start()
    assert rename_done.wait(5)
    while not save_done.is_set():  # a reader between the rename's commit and the save's
        _read_in_another_thread("Cup")
        time.sleep(0.002)
    for thread in threads:
        thread.join()
    assert Product.objects.get(pk=product.pk).name == "Mug"
    assert cache.get_product("Cup", product_json) is None
