"""A refused CSRF check outside the API answers as the other error pages do: JSON to a client that prefers it.

Before, ``POST /admin/login/`` with ``Accept: application/json``
and no CSRF token got Django's HTML 403 page, unlike a 400, 403 or 404 there
(docs/api.md: errors elsewhere are JSON when the client prefers JSON to HTML).
"""

from __future__ import annotations

import pytest
from django.test import Client


# Not "/": it only redirects, and answers any other method 405 (test_api_root.py).
@pytest.mark.parametrize("path", ["/admin/login/", "/api-auth/login/"])
def test_a_json_client_gets_a_json_403(db, path):
    response = Client(enforce_csrf_checks=True).post(path, {"username": "x"}, HTTP_ACCEPT="application/json")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "CSRF Failed: CSRF cookie not set."}


@pytest.mark.parametrize(
    "accept", [None, "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "*/*"]
)
def test_a_browser_still_gets_djangos_page(db, accept):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = Client(enforce_csrf_checks=True).post("/admin/login/", {"username": "x"}, **headers)
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")
    assert b"CSRF verification failed" in response.content


def test_the_api_still_answers_its_own_csrf_refusal(db, editor):
    client = Client(enforce_csrf_checks=True)
    client.force_login(editor)
    response = client.post("/api/products/", {"name": "X", "price": "1"}, HTTP_ACCEPT="application/json")
    assert response.status_code == 403
    assert response.json() == {"detail": "CSRF Failed: CSRF cookie not set."}
