"""export_products refuses a --chunk-size out of range with its own message, not a database error."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from products.models import Product


@pytest.mark.parametrize("size", ["0", "-5", "1000001", "2147483648", "99999999999999999999"])
def test_a_chunk_size_out_of_range_is_refused_as_such(db, tmp_path, size):
    Product.objects.create(name="Mug", price="1.00", quantity=1)
    path = tmp_path / "out.csv"
    with pytest.raises(CommandError) as refused:
        call_command(
            "export_products",
            "-o",
            str(path),
            "--chunk-size",
            size,
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    message = str(refused.value)
    # Before: "the database is not usable (IntegrityError: datatype mismatch) ... Check DATABASE_URL"
    assert message.startswith("--chunk-size must be from 1 to 1,000,000"), message
    assert "database" not in message
    assert not path.exists()


def test_the_largest_chunk_size_still_exports(db, tmp_path):
    Product.objects.create(name="Mug", price="1.00", quantity=1)
    path = tmp_path / "out.csv"
    call_command(
        "export_products",
        "-o",
        str(path),
        "--chunk-size",
        "1000000",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    assert path.read_text() == "name,price,quantity\nMug,1.00,1\n"
