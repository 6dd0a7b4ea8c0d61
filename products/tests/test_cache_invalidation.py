"""Every write path leaves no stale product in the cache once it has committed."""

import io
import threading
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection, migrations, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Value
from django.db.models.functions import Concat
from django.test import Client

from products import cache
from products.models import Product
from products.selectors import product_json
from products.services import stock

pytestmark = pytest.mark.django_db(transaction=True)


class CountingLoader:
    """The real database loader, counting its calls (each call is one query)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, name: str):
        self.calls += 1
        return product_json(name)


def read(name: str):
    loader = CountingLoader()
    cached = cache.get_product(name, load=loader)
    return cached, loader.calls


@pytest.fixture
def admin_client(db) -> Client:
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.login(username="admin", password="pw")
    return client


def _admin_form(product: Product, **changes) -> dict:
    # As the change page sends it: with the version it was opened at.
    seen = Product.objects.get(pk=product.pk).updated_at.isoformat()
    form = {
        "name": product.name,
        "price": str(product.price),
        "quantity": product.quantity,
        "seen_version": seen,
    }
    form.update(changes)
    return form


def api_put(p, editor_client, admin_client):
    assert (
        editor_client.put(
            "/api/products/Mug/", {"name": "Mug", "price": "2.00", "quantity": 1}, format="json"
        ).status_code
        == 200
    )


def api_patch(p, editor_client, admin_client):
    assert editor_client.patch("/api/products/Mug/", {"price": "2.00"}, format="json").status_code == 200


def api_delete(p, editor_client, admin_client):
    assert editor_client.delete("/api/products/Mug/").status_code == 204


def api_rename(p, editor_client, admin_client):
    assert editor_client.patch("/api/products/Mug/", {"name": "Cup"}, format="json").status_code == 200


def api_stock(p, editor_client, admin_client):
    assert editor_client.post("/api/products/Mug/stock/", {"delta": 4}, format="json").status_code == 200


def legacy_route_create_after_delete(p, editor_client, admin_client):
    Product.objects.filter(name="Mug").delete()
    assert (
        editor_client.post("/products", {"name": "Mug", "price": 2, "quantity": 1}, format="json").status_code
        == 201
    )


def admin_change(p, editor_client, admin_client):
    response = admin_client.post(f"/admin/products/product/{p.pk}/change/", _admin_form(p, price="2.00"))
    assert response.status_code == 302, response.content


def admin_rename(p, editor_client, admin_client):
    response = admin_client.post(f"/admin/products/product/{p.pk}/change/", _admin_form(p, name="Cup"))
    assert response.status_code == 302, response.content


def admin_delete(p, editor_client, admin_client):
    assert admin_client.post(f"/admin/products/product/{p.pk}/delete/", {"post": "yes"}).status_code == 302


def admin_delete_selected(p, editor_client, admin_client):
    response = admin_client.post(
        "/admin/products/product/", {"action": "delete_selected", "_selected_action": [p.pk], "post": "yes"}
    )
    assert response.status_code == 302


def model_save(p, editor_client, admin_client):
    p.price = Decimal("2.00")
    p.save()


def model_save_unloaded_instance(p, editor_client, admin_client):
    # An instance built by hand (never loaded) renaming a stored row.
    Product(pk=p.pk, name="Cup", price=p.price, quantity=p.quantity, created_at=p.created_at).save()


def model_save_rename_with_name_deferred(p, editor_client, admin_client):
    product = Product.objects.only("id", "price").get(pk=p.pk)
    product.name = "Cup"
    product.save()


def model_save_rename_of_an_outdated_instance(p, editor_client, admin_client):
    Product.objects.filter(pk=p.pk).update(name="Interim")  # someone else renames it
    read("Interim")  # and readers cache the interim name
    p.name = "Cup"  # our instance still says "Mug"
    p.save()
    assert read("Interim")[0] is None


def model_delete(p, editor_client, admin_client):
    p.delete()


def model_delete_with_name_deferred(p, editor_client, admin_client):
    Product.objects.only("id").get(pk=p.pk).delete()
    assert not Product.objects.filter(pk=p.pk).exists()


def queryset_update(p, editor_client, admin_client):
    assert Product.objects.filter(name="Mug").update(price=Decimal("2.00")) == 1


def queryset_update_rename(p, editor_client, admin_client):
    assert Product.objects.filter(name="Mug").update(name="Cup") == 1


def queryset_delete(p, editor_client, admin_client):
    Product.objects.filter(name__startswith="M").delete()


def bulk_create_upsert(p, editor_client, admin_client):
    Product.objects.bulk_create(
        [Product(name="Mug", price=Decimal("2.00"), quantity=1)],
        update_conflicts=True,
        unique_fields=["name"],
        update_fields=["price", "quantity"],
    )


def bulk_update(p, editor_client, admin_client):
    p.price = Decimal("2.00")
    Product.objects.bulk_update([p], ["price"])


def bulk_update_rename(p, editor_client, admin_client):
    p.name = "Cup"
    Product.objects.bulk_update([p], ["name"])


def service_adjust_stock(p, editor_client, admin_client):
    stock.adjust_stock(name="Mug", delta=-1)


def base_manager_update(p, editor_client, admin_client):
    assert Product._base_manager.filter(name="Mug").update(price=Decimal("2.00")) == 1


def base_manager_delete(p, editor_client, admin_client):
    Product._base_manager.filter(name="Mug").delete()


def run_data_migration(forwards, *, post_migrate: bool) -> None:
    """Apply a throwaway data migration on top of the products app, as ``migrate`` does."""
    executor = MigrationExecutor(connection)
    leaf = executor.loader.graph.leaf_nodes("products")[0]
    migration = type(
        "Migration",
        (migrations.Migration,),
        {"dependencies": [leaf], "operations": [migrations.RunPython(forwards, migrations.RunPython.noop)]},
    )("9999_throwaway_data_migration", "products")
    state = executor.loader.project_state(leaf)
    try:
        executor.apply_migration(state, migration)
    finally:
        executor.recorder.record_unapplied(migration.app_label, migration.name)
    if post_migrate:
        emit_post_migrate_signal(0, False, connection.alias, apps=state.apps, plan=[(migration, False)])


def data_migration_queryset_update(p, editor_client, admin_client):
    def forwards(apps, schema_editor):
        historical = apps.get_model("products", "Product")
        assert historical is not Product
        historical.objects.filter(name="Mug").update(price=Decimal("2.00"))

    # Without the post_migrate retirement: the historical manager invalidates by itself.
    run_data_migration(forwards, post_migrate=False)


def data_migration_instance_save(p, editor_client, admin_client):
    def forwards(apps, schema_editor):
        product = apps.get_model("products", "Product").objects.get(name="Mug")
        product.price = Decimal("2.00")
        product.save()  # signals for the historical class: covered when migrate ends

    run_data_migration(forwards, post_migrate=True)


WRITE_PATHS = [
    api_put,
    api_patch,
    api_delete,
    api_rename,
    api_stock,
    legacy_route_create_after_delete,
    admin_change,
    admin_rename,
    admin_delete,
    admin_delete_selected,
    model_save,
    model_save_unloaded_instance,
    model_save_rename_with_name_deferred,
    model_save_rename_of_an_outdated_instance,
    model_delete,
    model_delete_with_name_deferred,
    queryset_update,
    queryset_update_rename,
    queryset_delete,
    bulk_create_upsert,
    bulk_update,
    bulk_update_rename,
    service_adjust_stock,
    base_manager_update,
    base_manager_delete,
    data_migration_queryset_update,
    data_migration_instance_save,
]


@pytest.mark.parametrize("write", WRITE_PATHS, ids=[w.__name__ for w in WRITE_PATHS])
def test_write_invalidates_cached_product(write, editor_client, admin_client):
    product = Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    # Warm the cache and prove it serves the old value without the database.
    read("Mug")
    old, calls = read("Mug")
    assert old.hit and calls == 0

    write(product, editor_client, admin_client)

    fresh, calls = read("Mug")
    stored = product_json("Mug")
    if stored is None:
        assert fresh is None, "a deleted or renamed product is still served from the cache"
    else:
        assert not fresh.hit and calls == 1
        assert fresh.data == stored
        assert fresh.data != old.data
    renamed = Product.objects.filter(pk=product.pk).values_list("name", flat=True).first()
    if renamed and renamed != "Mug":
        assert read(renamed)[0].data == product_json(renamed)


# --- Writes that make a name exist: the cache remembers a name has no product ------


def create_api(editor_client, admin_client):
    response = editor_client.post("/api/products/", {"name": "Mug", "price": "2.00"}, format="json")
    assert response.status_code == 201


def create_legacy_route(editor_client, admin_client):
    response = editor_client.post("/products", {"name": "Mug", "price": 2, "quantity": 1}, format="json")
    assert response.status_code == 201


def create_admin_add(editor_client, admin_client):
    response = admin_client.post(
        "/admin/products/product/add/", {"name": "Mug", "price": "2.00", "quantity": 1}
    )
    assert response.status_code == 302, response.content


def create_model(editor_client, admin_client):
    Product.objects.create(name="Mug", price=Decimal("2.00"), quantity=1)


def create_bulk(editor_client, admin_client):
    Product.objects.bulk_create([Product(name="Mug", price=Decimal("2.00"), quantity=1)])


def create_import(editor_client, admin_client, tmp_path):
    path = tmp_path / "products.csv"
    path.write_text("name,price,quantity\nMug,2.00,1\n")
    call_command("import_products", str(path), stdout=io.StringIO(), stderr=io.StringIO())


def create_api_rename(editor_client, admin_client):
    Product.objects.create(name="Cup", price=Decimal("2.00"), quantity=1)
    assert editor_client.patch("/api/products/Cup/", {"name": "Mug"}, format="json").status_code == 200


def create_queryset_rename(editor_client, admin_client):
    Product.objects.create(name="Cup", price=Decimal("2.00"), quantity=1)
    Product.objects.filter(name="Cup").update(name="Mug")


def create_queryset_rename_by_expression(editor_client, admin_client):
    # The new name is computed by the database: only it knows the name.
    Product.objects.create(name="M", price=Decimal("2.00"), quantity=1)
    Product.objects.filter(name="M").update(name=Concat("name", Value("ug")))


CREATE_PATHS = [
    create_api,
    create_legacy_route,
    create_admin_add,
    create_model,
    create_bulk,
    create_import,
    create_api_rename,
    create_queryset_rename,
    create_queryset_rename_by_expression,
]


@pytest.mark.parametrize("create", CREATE_PATHS, ids=[c.__name__ for c in CREATE_PATHS])
def test_a_write_that_makes_a_name_exist_ends_its_cached_absence(
    create, editor_client, admin_client, tmp_path
):
    # A burst of reads of an unknown name costs one query (SPEC): the cache
    # remembers the name has no product, so every write that makes it exist
    # must invalidate that, as any other write does.
    assert read("Mug") == (None, 1)
    assert read("Mug") == (None, 0), "the second read of an unknown name went to the database"

    if create is create_import:
        create(editor_client, admin_client, tmp_path)
    else:
        create(editor_client, admin_client)

    fresh, calls = read("Mug")
    assert fresh is not None, "the product is still unknown to the cache after its write"
    assert calls == 1 and fresh.data == product_json("Mug")


def test_invalidation_happens_after_commit_even_if_a_reader_refills_meanwhile():
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    read("Mug")
    refilled = threading.Event()

    def reader():
        # Another connection still sees the committed old row and re-fills.
        try:
            value, _ = read("Mug")
            assert b'"1.00"' in value.data
            refilled.set()
        finally:
            connection.close()

    with transaction.atomic():
        Product.objects.filter(name="Mug").update(price=Decimal("2.00"))
        thread = threading.Thread(target=reader)
        thread.start()
        thread.join(10)
        assert refilled.is_set()
        # Inside the transaction a read sees its own write, from the database.
        value, calls = read("Mug")
        assert calls == 1 and not value.hit and b'"2.00"' in value.data
    value, calls = read("Mug")
    assert calls == 1 and b'"2.00"' in value.data


def test_a_rolled_back_write_never_reaches_the_cache():
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    with pytest.raises(RuntimeError), transaction.atomic():
        Product.objects.filter(name="Mug").update(price=Decimal("99.00"))
        assert b'"99.00"' in read("Mug")[0].data  # read inside: not stored
        raise RuntimeError("abort")
    value, calls = read("Mug")
    assert calls == 1 and b'"1.00"' in value.data
    assert read("Mug")[0].hit


def test_rolled_back_write_leaves_the_product_readable():
    Product.objects.create(name="Mug", price=Decimal("1.00"), quantity=1)
    with pytest.raises(RuntimeError), transaction.atomic():
        Product.objects.filter(name="Mug").update(price=Decimal("2.00"))
        raise RuntimeError("abort")
    value, _ = read("Mug")
    assert b'"1.00"' in value.data


def test_large_update_retires_the_generation(settings):
    from products import querysets

    Product.objects.bulk_create(
        [Product(name=f"p{i:04d}", price=Decimal("1.00"), quantity=1) for i in range(30)]
    )
    for name in ("p0000", "p0029"):
        read(name)
    original = querysets.INVALIDATE_BY_NAME_LIMIT
    querysets.INVALIDATE_BY_NAME_LIMIT = 10
    try:
        assert Product.objects.update(quantity=0) == 30
    finally:
        querysets.INVALIDATE_BY_NAME_LIMIT = original
    for name in ("p0000", "p0029"):
        value, calls = read(name)
        assert calls == 1 and b'"quantity":0' in value.data


def test_large_delete_retires_the_generation():
    from products import querysets

    Product.objects.bulk_create(
        [Product(name=f"p{i:04d}", price=Decimal("1.00"), quantity=1) for i in range(30)]
    )
    read("p0007")
    original = querysets.INVALIDATE_BY_NAME_LIMIT
    querysets.INVALIDATE_BY_NAME_LIMIT = 10
    try:
        deleted, _ = Product.objects.filter(name__startswith="p").delete()
    finally:
        querysets.INVALIDATE_BY_NAME_LIMIT = original
    assert deleted == 30
    assert read("p0007")[0] is None
