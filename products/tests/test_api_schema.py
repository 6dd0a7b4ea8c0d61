"""The OpenAPI schema describes every route, and the docs pages need no internet."""

from __future__ import annotations

import re

import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(django_db_blocker, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    with django_db_blocker.unblock():
        # --fail-on-warn: nothing the generator had to guess.
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def test_every_route_is_described(schema):
    operations = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert operations == {
        ("/api/products/", "get"),
        ("/api/products/", "post"),
        ("/api/products/{name}/", "get"),
        ("/api/products/{name}/", "put"),
        ("/api/products/{name}/", "patch"),
        ("/api/products/{name}/", "delete"),
        ("/api/products/{name}/stock/", "post"),
        ("/health/", "get"),
        ("/products", "post"),
        ("/products/{name}", "get"),
    }


def test_status_codes_are_documented(schema):
    paths = schema["paths"]
    assert set(paths["/api/products/"]["post"]["responses"]) >= {
        "201",
        "400",
        "401",
        "403",
        "409",
        "413",
        "415",
        "429",
    }
    # gunicorn's 414 for a request line over 4 KB, which a long search reaches (schemathesis met it).
    assert set(paths["/api/products/"]["get"]["responses"]) >= {"200", "400", "414"}
    # A NUL in any query string is refused (400): the schema's search does not allow one.
    (search,) = [p for p in paths["/api/products/"]["get"]["parameters"] if p["name"] == "search"]
    assert re.search(search["schema"]["pattern"], "mug") and not re.search(
        search["schema"]["pattern"], "mu\x00g"
    )
    assert set(paths["/api/products/{name}/"]["get"]["responses"]) >= {"200", "304", "404", "429"}
    assert set(paths["/api/products/{name}/"]["put"]["responses"]) >= {
        "200",
        "400",
        "404",
        "409",
        "412",
        "413",
        "415",
    }
    assert set(paths["/api/products/{name}/"]["delete"]["responses"]) >= {"204", "404", "412"}
    assert set(paths["/api/products/{name}/stock/"]["post"]["responses"]) >= {"200", "400", "404", "409"}
    assert set(paths["/health/"]["get"]["responses"]) == {"200", "406", "503"}
    assert set(paths["/products"]["post"]["responses"]) >= {"201", "400", "409"}
    assert set(paths["/products/{name}"]["get"]["responses"]) >= {"200", "304", "404"}


def test_every_operation_documents_the_503_it_answers_with_retry_after(schema):
    # A database that is down or busy answers 503 with Retry-After on every route.
    for path, operations in schema["paths"].items():
        if not path.startswith(("/api/products", "/products")):
            continue
        for method, operation in operations.items():
            answer = operation["responses"].get("503")
            assert answer is not None, (method, path)
            assert "Retry-After" in answer["headers"], (method, path)


def test_every_operation_documents_the_406_an_accept_it_cannot_satisfy_gets(schema, client, make_product):
    # DRF negotiates before anything else (authentication included): a client
    # generated with raise_on_unexpected_status raised on it (a review).
    make_product(name="mug")
    examples = {"name": "mug"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            assert operation["responses"]["406"]["content"]["application/json"], (method, path)
            url = re.sub(r"\{(\w+)\}", lambda m: examples[m.group(1)], path)
            answer = client.generic(
                method.upper(), url, "{}", content_type="application/json", HTTP_ACCEPT="application/xml"
            )
            assert answer.status_code == 406, (method, path, answer.status_code)
            assert answer.json() == {"detail": "Could not satisfy the request Accept header."}


def test_stock_request_and_health_bodies(schema):
    components = schema["components"]["schemas"]
    stock = schema["paths"]["/api/products/{name}/stock/"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    body = components[stock["$ref"].rsplit("/", 1)[1]]
    assert body["required"] == ["delta"] and body["properties"]["delta"]["type"] == "integer"
    health = components["Health"]["properties"]
    assert set(health) == {"database", "cache"}
    legacy = components["LegacyProductEnvelope"]["properties"]
    assert set(legacy) == {"type", "count", "attributes"}


def test_headers_and_auth_schemes(schema):
    item = schema["paths"]["/api/products/{name}/"]
    get_params = {p["name"] for p in item["get"]["parameters"]}
    assert "If-None-Match" in get_params
    assert {"ETag", "X-Cache"} <= set(item["get"]["responses"]["200"]["headers"])
    assert "ETag" in item["get"]["responses"]["304"]["headers"]
    for method in ("put", "patch", "delete"):
        assert "If-Match" in {p["name"] for p in item[method]["parameters"]}
    assert "Retry-After" in item["get"]["responses"]["429"]["headers"]
    assert {"Location", "ETag"} <= set(
        schema["paths"]["/api/products/"]["post"]["responses"]["201"]["headers"]
    )
    assert set(schema["components"]["securitySchemes"]) == {"tokenAuth", "cookieAuth", "basicAuth"}
    # Reads need no credentials; writes do.
    assert {} in item["get"]["security"] and {} not in item["put"]["security"]


def test_list_parameters_match_the_filters(schema):
    params = {p["name"]: p for p in schema["paths"]["/api/products/"]["get"]["parameters"]}
    assert {"search", "min_price", "max_price", "in_stock", "ordering", "cursor", "page_size"} <= set(params)
    assert "-updated_at" in params["ordering"]["schema"]["enum"]
    assert params["page_size"]["schema"]["maximum"] == 500
    assert all(params[name]["allowEmptyValue"] for name in ("in_stock", "min_price", "cursor"))


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_load_every_asset_from_this_server(client, page):
    response = client.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets
    for asset in assets:
        assert asset.startswith("/static/"), asset
        served = client.get(asset)
        assert served.status_code == 200, asset
        b"".join(served.streaming_content) if served.streaming else served.content
    assert "/api/schema/" in html
    if page == "/api/docs/":
        # Swagger UI's validator badge would call validator.swagger.io.
        assert '"validatorUrl": null' in html


def test_documented_304_answers_if_none_match(anon_client, make_product):
    make_product("Cup")
    etag = anon_client.get("/api/products/Cup/")["ETag"]
    response = anon_client.get("/api/products/Cup/", HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304 and response["ETag"] == etag and not response.content


def test_legacy_routes_are_tagged_and_named_legacy(schema):
    for path, method in (("/products", "post"), ("/products/{name}", "get")):
        operation = schema["paths"][path][method]
        assert operation["tags"] == ["legacy"]
        assert operation["operationId"].startswith("legacy_")
        assert "legacy" in operation["summary"].lower()
    for item in schema["paths"].values():
        for operation in item.values():
            assert "seed" not in operation.get("tags", []) and "seed" not in operation["operationId"]
    assert not [name for name in schema["components"]["schemas"] if "seed" in name.lower()]


def test_write_bodies_carry_a_sensible_example(schema):
    blue_mug = {"name": "Blue mug", "price": "12.50", "quantity": 10}
    for path, method in (("/api/products/", "post"), ("/api/products/{name}/", "put"), ("/products", "post")):
        examples = schema["paths"][path][method]["requestBody"]["content"]["application/json"]["examples"]
        assert [example["value"] for example in examples.values()] == [blue_mug]
    patch = schema["paths"]["/api/products/{name}/"]["patch"]["requestBody"]["content"]["application/json"]
    assert {"price": "12.50"} in [example["value"] for example in patch["examples"].values()]
    # Swagger's "Try it out" builds bodies from the properties' examples.
    properties = schema["components"]["schemas"]["ProductRequest"]["properties"]
    assert [properties[field]["example"] for field in ("name", "price", "quantity")] == [
        "Blue mug",
        "12.50",
        10,
    ]


def test_descending_orderings_have_names(schema):
    params = {p["name"]: p for p in schema["paths"]["/api/products/"]["get"]["parameters"]}
    ordering = params["ordering"]["schema"]
    names = dict(zip(ordering["enum"], ordering["x-enum-varnames"], strict=True))
    assert names["-price"] == "price_desc" and names["name"] == "name"


def test_token_scheme_says_how_to_send_the_token(schema):
    token = schema["components"]["securitySchemes"]["tokenAuth"]
    assert (token["type"], token["in"], token["name"]) == ("apiKey", "header", "Authorization")
    assert "Token <key>" in token["description"] or "`Token`" in token["description"]


def test_one_validation_error_model_for_every_400_and_name_conflict(schema):
    refs = set()
    for item in schema["paths"].values():
        for operation in item.values():
            for code in ("400", "409"):
                content = operation["responses"].get(code, {}).get("content")
                if content:
                    refs.add(content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1])
    assert refs == {"ValidationError", "ErrorDetail"}  # ErrorDetail: the stock conflict
    assert "additionalProperties" in schema["components"]["schemas"]["ValidationError"]


def test_every_operation_and_response_describes_x_request_id(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert "X-Request-ID" in {p["name"] for p in operation["parameters"] if p["in"] == "header"}, (
                path,
                method,
            )
            for code, response in operation["responses"].items():
                assert response["headers"]["X-Request-ID"]["required"] is True, (path, method, code)


def test_descriptions_speak_to_clients(schema):
    # A serializer mixin's docstring once became the description of every
    # product model (and of the generated client's classes).
    for name, component in schema["components"]["schemas"].items():
        description = component.get("description", "")
        assert "mixin" not in description.lower() and "DRF" not in description, name
    assert schema["components"]["schemas"]["Product"]["description"].startswith("A product")
    parameter = next(
        p for p in schema["paths"]["/api/products/{name}/"]["get"]["parameters"] if p["name"] == "name"
    )
    assert "as it is" in parameter["description"]
