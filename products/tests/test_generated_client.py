"""A client generated from the served schema works, and every answer matches the schema.

As an API consumer would: openapi-python-client (pinned in
requirements-dev.txt) generates a package from ``/api/schema/``, once per
session, into a temp dir. The package must import and pass ``ruff check``;
then one scenario drives it against a live server, and openapi-core validates
every response of the run against the same schema (docs/api-clients.md).
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from products.models import Product

pytestmark = pytest.mark.slow  # a generator run and a live server

PACKAGE = "catalogue_client"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def generated(served_schema, tmp_path_factory) -> dict:
    """Generate the client package; return its output and path."""
    root = tmp_path_factory.mktemp("generated")
    (root / "schema.json").write_text(json.dumps(served_schema))
    result = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(root / "schema.json"),
            "--output-path",
            str(root / PACKAGE),
            "--meta",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        # Its post-generation hooks run ruff, found on PATH.
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {"root": root, "output": result.stdout + result.stderr}


@pytest.fixture(scope="session")
def client_package(generated):
    """Import every module of the generated package; yield the package."""
    sys.path.insert(0, str(generated["root"]))
    try:
        package = importlib.import_module(PACKAGE)
        failures = {}
        for module in pkgutil.walk_packages(package.__path__, f"{PACKAGE}."):
            try:
                importlib.import_module(module.name)
            except Exception as exc:
                failures[module.name] = repr(exc)
        assert not failures, failures
        yield package
    finally:
        sys.path.remove(str(generated["root"]))
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_generation_reports_no_warnings(generated):
    assert "Warning" not in generated["output"], generated["output"]


def test_generated_package_passes_ruff(generated):
    result = subprocess.run(
        [str(BIN / "ruff"), "check", "--isolated", "--no-cache", str(generated["root"] / PACKAGE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_patch_bodies_have_no_defaults_and_responses_are_typed_as_sent(served_schema):
    components = served_schema["components"]["schemas"]
    for name, component in components.items():
        if name.startswith("Patched"):
            assert all("default" not in field for field in component["properties"].values()), name
    product = components["Product"]
    assert set(product["required"]) == set(product["properties"])
    assert product["properties"]["price"]["type"] == "string" and product["properties"]["price"]["pattern"]
    assert "multipleOf" not in json.dumps(served_schema)
    for item in served_schema["paths"].values():
        for operation in item.values():
            if "requestBody" in operation:
                assert list(operation["requestBody"]["content"]) == ["application/json"]
            for code in ("400", "409"):
                schema = operation.get("responses", {}).get(code, {}).get("content", {})
                if schema:
                    assert "$ref" in schema["application/json"]["schema"], (operation["operationId"], code)


# --- The scenario ------------------------------------------------------------------


class ResponseChecker:
    """An httpx response hook: validate each response against the schema, note failures."""

    def __init__(self, schema: dict) -> None:
        from openapi_core import OpenAPI

        self.openapi = OpenAPI.from_dict(schema)
        self.checked: list[str] = []
        self.failures: list[str] = []
        self.bodies: list[bytes] = []

    def last_body(self):
        return json.loads(self.bodies[-1])

    def __call__(self, response) -> None:
        from openapi_core.testing import MockRequest, MockResponse

        response.read()
        request = response.request
        url = request.url
        label = f"{request.method} {url.path} -> {response.status_code}"
        self.checked.append(label)
        self.bodies.append(request.content)
        mock_request = MockRequest(
            host_url=f"{url.scheme}://{url.netloc.decode()}",
            method=request.method,
            path=url.path,
            args=dict(url.params),
            headers=dict(request.headers),
            data=request.content,
            content_type=request.headers.get("content-type", ""),
        )
        mock_response = MockResponse(
            data=response.content,
            status_code=response.status_code,
            headers=dict(response.headers),
            content_type=response.headers.get("content-type", ""),
        )
        try:
            self.openapi.validate_response(mock_request, mock_response)
        except Exception as exc:
            cause = getattr(exc, "__cause__", None)
            self.failures.append(f"{label}: {exc!r} {cause!r}")


def _module(package, name: str):
    return importlib.import_module(f"{package.__name__}.{name}")


def _cursor(next_url: str) -> str:
    return parse_qs(urlparse(next_url).query)["cursor"][0]


def test_generated_client_runs_the_whole_catalogue(client_package, served_schema, live_server, editor_token):
    pkg = client_package
    models = _module(pkg, "models")
    create = _module(pkg, "api.products.api_products_create")
    retrieve = _module(pkg, "api.products.api_products_retrieve")
    patch = _module(pkg, "api.products.api_products_partial_update")
    stock = _module(pkg, "api.products.api_products_stock_create")
    listing = _module(pkg, "api.products.api_products_list")
    destroy = _module(pkg, "api.products.api_products_destroy")
    legacy_create = _module(pkg, "api.legacy.legacy_products_create")
    legacy_retrieve = _module(pkg, "api.legacy.legacy_products_retrieve")

    checker = ResponseChecker(served_schema)
    client = pkg.AuthenticatedClient(
        base_url=live_server.url,
        token=editor_token,
        # The generator defaults to "Bearer"; the scheme's description says "Token".
        prefix="Token",
        httpx_args={"event_hooks": {"response": [checker]}},
    )

    # Create: a name with a space and non-ASCII letters.
    name = "Blue mug ☕ größe"
    created = create.sync_detailed(
        client=client, body=models.ProductRequest(name=name, price="12.50", quantity=10)
    )
    assert created.status_code == 201, created.content
    assert isinstance(created.parsed, models.Product)
    assert (created.parsed.name, created.parsed.price, created.parsed.quantity) == (name, "12.50", 10)
    assert created.headers["ETag"] and created.headers["Location"].endswith(
        "/api/products/Blue%20mug%20%E2%98%95%20gr%C3%B6%C3%9Fe/"
    )

    # Read twice: the database, then the cache.
    first = retrieve.sync_detailed(name, client=client)
    second = retrieve.sync_detailed(name, client=client)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert first.parsed == second.parsed and second.parsed.quantity == 10

    # A price-only PATCH changes only the price.
    repriced = patch.sync_detailed(name, client=client, body=models.PatchedProductRequest(price="13.00"))
    assert repriced.status_code == 200, repriced.content
    assert checker.last_body() == {"price": "13.00"}  # what the client sent: no quantity
    assert (repriced.parsed.price, repriced.parsed.quantity) == ("13.00", 10)
    assert Product.objects.get(name=name).quantity == 10

    # Rename: the quantity stays too.
    new_name = "Blue mug ☕ large"
    renamed = patch.sync_detailed(name, client=client, body=models.PatchedProductRequest(name=new_name))
    assert (renamed.parsed.name, renamed.parsed.quantity) == (new_name, 10)
    assert Product.objects.get(name=new_name).quantity == 10

    # Stock change.
    sold = stock.sync_detailed(new_name, client=client, body=models.StockChangeRequest(delta=-3))
    assert sold.status_code == 200 and sold.parsed.quantity == 7

    # A filtered list, followed to its second page.
    for index, price in enumerate(["1.00", "2.00", "3.00", "4.00"]):
        made = create.sync_detailed(
            client=client, body=models.ProductRequest(name=f"Blue plate {index}", price=price, quantity=index)
        )
        assert made.status_code == 201, made.content
    filters = {
        "search": "Blue",
        "min_price": 2,
        "ordering": models.ApiProductsListOrdering.PRICE_DESC,
        "page_size": 2,
    }
    page1 = listing.sync_detailed(client=client, **filters)
    assert page1.status_code == 200, page1.content
    assert isinstance(page1.parsed, models.PaginatedProductList) and page1.parsed.next_
    page2 = listing.sync_detailed(client=client, cursor=_cursor(page1.parsed.next_), **filters)
    assert page2.status_code == 200, page2.content
    prices = [p.price for p in page1.parsed.results + page2.parsed.results]
    assert prices == ["13.00", "4.00", "3.00", "2.00"] and page2.parsed.next_ is None

    # The legacy routes (the original Flask service's).
    legacy = legacy_create.sync_detailed(
        client=client, body=models.LegacyProductRequest(name="Green jug", price=7.5, quantity=2)
    )
    assert legacy.status_code == 201, legacy.content
    assert legacy.parsed.attributes.price == "7.50" and legacy.parsed.type_ == "Product"
    legacy_read = legacy_retrieve.sync_detailed("Green jug", client=client)
    assert legacy_read.status_code == 200 and legacy_read.parsed.attributes.quantity == 2

    # Errors, parsed into their models.
    bad = create.sync_detailed(
        client=client, body=models.ProductRequest(name="Bad", price="1.234", quantity=1)
    )
    assert bad.status_code == 400 and isinstance(bad.parsed, models.ValidationError)
    assert bad.parsed.additional_properties["price"] == ["Price must have at most 2 decimal places."]
    duplicate = create.sync_detailed(client=client, body=models.ProductRequest(name=new_name, price="1.00"))
    assert duplicate.status_code == 409 and isinstance(duplicate.parsed, models.ValidationError)
    assert "name" in duplicate.parsed.additional_properties
    oversold = stock.sync_detailed(new_name, client=client, body=models.StockChangeRequest(delta=-100))
    assert oversold.status_code == 409 and isinstance(oversold.parsed, models.ErrorDetail)
    stale = patch.sync_detailed(
        new_name, client=client, body=models.PatchedProductRequest(price="1.00"), if_match='"stale"'
    )
    assert stale.status_code == 412 and isinstance(stale.parsed, models.ErrorDetail)
    assert Product.objects.get(name=new_name).price == 13

    # Delete, then the product is gone (404, parsed).
    deleted = destroy.sync_detailed(new_name, client=client)
    assert deleted.status_code == 204
    missing = retrieve.sync_detailed(new_name, client=client)
    assert missing.status_code == 404 and isinstance(missing.parsed, models.ErrorDetail)
    assert missing.parsed.detail == "Not found."

    # Every response of the run matched the schema.
    assert len(checker.checked) == 20, checker.checked  # every call of the run
    assert not checker.failures, "\n".join(checker.failures)


def test_response_checker_catches_an_answer_the_schema_does_not_allow(served_schema):
    import httpx

    checker = ResponseChecker(served_schema)
    request = httpx.Request("GET", "http://testserver/api/products/Mug/")
    sent = {"id": 1, "name": "Mug", "price": 12.5, "quantity": 1, "created_at": "x", "updated_at": "x"}
    checker(
        httpx.Response(
            200, json=sent, headers={"ETag": '"a"', "X-Cache": "HIT", "X-Request-ID": "t1"}, request=request
        )
    )
    assert len(checker.failures) == 1 and "price" in checker.failures[0]
    sent.update(price="12.50", created_at="2026-01-01T00:00:00Z", updated_at="2026-01-01T00:00:00Z")
    checker(
        httpx.Response(
            200, json=sent, headers={"ETag": '"a"', "X-Cache": "HIT", "X-Request-ID": "t1"}, request=request
        )
    )
    assert len(checker.failures) == 1, checker.failures
