"""Indexes for ``?search=`` (name contains, case-insensitive), one per database.

PostgreSQL: a trigram GIN index on ``UPPER(name::text)``, the expression
Django's ``icontains`` compares, so a contains search is an index lookup.

SQLite: an FTS5 table with the trigram tokenizer over the names, kept in step
by triggers (so every write path, raw SQL included, updates it). A phrase
query of three or more characters is a substring match with Unicode case
folding.

Other databases: nothing (search scans, as before).
"""

from django.db import migrations

SQLITE_FORWARD = [
    "CREATE VIRTUAL TABLE products_product_name_fts USING fts5("
    "name, content='products_product', content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER products_product_name_fts_insert AFTER INSERT ON products_product BEGIN "
    "INSERT INTO products_product_name_fts(rowid, name) VALUES (new.id, new.name); END",
    "CREATE TRIGGER products_product_name_fts_delete AFTER DELETE ON products_product BEGIN "
    "INSERT INTO products_product_name_fts(products_product_name_fts, rowid, name) "
    "VALUES ('delete', old.id, old.name); END",
    "CREATE TRIGGER products_product_name_fts_update AFTER UPDATE OF name ON products_product BEGIN "
    "INSERT INTO products_product_name_fts(products_product_name_fts, rowid, name) "
    "VALUES ('delete', old.id, old.name); "
    "INSERT INTO products_product_name_fts(rowid, name) VALUES (new.id, new.name); END",
    "INSERT INTO products_product_name_fts(products_product_name_fts) VALUES ('rebuild')",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS products_product_name_fts_update",
    "DROP TRIGGER IF EXISTS products_product_name_fts_delete",
    "DROP TRIGGER IF EXISTS products_product_name_fts_insert",
    "DROP TABLE IF EXISTS products_product_name_fts",
]
POSTGRESQL_FORWARD = [
    # Trusted since PostgreSQL 13: the database owner may create it.
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS products_product_name_trgm "
    "ON products_product USING gin ((UPPER(name::text)) gin_trgm_ops)",
]
POSTGRESQL_BACKWARD = ["DROP INDEX IF EXISTS products_product_name_trgm"]


def _run(statements: dict[str, list[str]]):
    def run(apps, schema_editor) -> None:
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("products", "0002_cache_outbox")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRESQL_FORWARD}),
            _run({"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRESQL_BACKWARD}),
        ),
    ]
