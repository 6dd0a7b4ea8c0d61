"""The admin's own actions: export the selection as CSV, mark out of stock (with invalidation).

Editing in the admin is a write path of its own: test_cache_invalidation.py
proves it invalidates, and test_browser.py drives the admin in a browser.
"""

from __future__ import annotations

import json

import pytest

from products import cache
from products.models import Product
from products.selectors import product_json

CHANGELIST = "/admin/products/product/"


def test_admin_export_selected_as_csv(admin_client, make_product):
    mug = make_product("Mug", "3.50", 4)
    bowl = make_product("Bowl, large", "12.00", 0)
    make_product("Not selected", "1.00", 1)
    response = admin_client.post(
        CHANGELIST, {"action": "export_selected_as_csv", "_selected_action": [mug.pk, bowl.pk]}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode()
    assert body == 'name,price,quantity\nMug,3.50,4\n"Bowl, large",12.00,0\n'


@pytest.mark.django_db(transaction=True)
def test_admin_mark_out_of_stock_updates_and_invalidates(admin_client):
    mug = Product.objects.create(name="Mug", price="3.50", quantity=4)
    other = Product.objects.create(name="Other", price="1.00", quantity=9)
    cache.get_product("Mug", product_json)
    assert cache.get_product("Mug", product_json).hit is True

    response = admin_client.post(
        CHANGELIST, {"action": "mark_out_of_stock", "_selected_action": [mug.pk]}, follow=True
    )

    assert response.status_code == 200
    assert "Marked 1 product(s) out of stock" in response.content.decode()
    assert Product.objects.get(pk=mug.pk).quantity == 0
    assert Product.objects.get(pk=other.pk).quantity == 9
    fresh = cache.get_product("Mug", product_json)
    assert fresh.hit is False and json.loads(fresh.data)["quantity"] == 0
