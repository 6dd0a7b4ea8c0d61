import pytest
from django.db import IntegrityError

from products.models import Product


def test_cached_read_hit_costs_no_query(editor_client, anon_client, django_assert_num_queries):
    assert editor_client.post("/api/products/", {"name": "Mug", "price": "3.50"}, format="json").status_code == 201
    first = anon_client.get("/api/products/Mug/")
    assert first["X-Cache"] == "MISS"
    with django_assert_num_queries(0):
        second = anon_client.get("/api/products/Mug/")
    assert second["X-Cache"] == "HIT"
    assert second.json()["price"] == "3.50"


@pytest.mark.django_db
def test_negative_price_is_refused_by_the_database():
    with pytest.raises(IntegrityError):
        Product.objects.create(name="Bad", price="-1", quantity=0)
