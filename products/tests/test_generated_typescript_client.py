"""A TypeScript client generated from the served schema works with the sign-in docs/api-clients.md shows.

As a TypeScript consumer would: @hey-api/openapi-ts (pinned in
products/tests/typescript/package-lock.json, installed with ``npm ci``)
generates a client from ``/api/schema/``; a script built around the
``createClient`` block of docs/api-clients.md, copied as written, drives a
live server. A snippet that sends no token (as one did: the generated code
leaves ``in`` out for a header scheme) fails every write here with a 401.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from products.models import Product

pytestmark = [pytest.mark.slow, pytest.mark.typescript]

HERE = Path(__file__).resolve().parent
DOC = HERE.parent.parent / "docs" / "api-clients.md"
NAME = "TS mug ☕ 50% a.b#?"

SCENARIO = """
const out: Record<string, unknown> = {};
async function main() {
  let r: any = await sdk.apiProductsCreate({ client, body: { name: NAME, price: "12.50", quantity: 10 } });
  out.create = [r.response.status, r.data?.name, r.response.headers.get("location")];
  r = await sdk.apiProductsRetrieve({ client, path: { name: NAME } });
  const etag = r.response.headers.get("etag");
  out.read = [r.response.status, r.data?.price, r.response.headers.get("x-cache")];
  r = await sdk.apiProductsRetrieve({ client, path: { name: NAME }, headers: { "If-None-Match": etag } });
  out.not_modified = [r.response.status, r.data === undefined];
  r = await sdk.apiProductsPartialUpdate({ client, path: { name: NAME }, body: { price: "13.00" } });
  out.patch = [r.response.status, r.data?.price, r.data?.quantity];
  r = await sdk.apiProductsStockCreate({ client, path: { name: NAME }, body: { delta: -100 } });
  out.stock_refused = [r.response.status, r.error?.detail];
  r = await sdk.apiProductsCreate({ client, body: { name: NAME, price: "1.00", quantity: 1 } });
  out.duplicate = [r.response.status, r.error?.name];
  r = await sdk.apiProductsDestroy({ client, path: { name: NAME } });
  out.delete = [r.response.status];
  console.log(JSON.stringify(out));
}
main().catch((error) => { console.error(error); process.exit(1); });
"""


def documented_client_block() -> str:
    """Return the ``createClient`` block of docs/api-clients.md's TypeScript section, as written."""
    section = DOC.read_text().split("## A TypeScript client", 1)[1]
    block = re.search(r"```ts\n(.*?)```", section, re.S)
    assert block and "createClient(" in block.group(1), "docs/api-clients.md lost its TypeScript client block"
    return block.group(1)


@pytest.fixture(scope="session")
def typescript_client(served_schema, tmp_path_factory) -> Path:
    """Install the pinned generator, generate the client; return the project folder."""
    npm = shutil.which("npm")
    assert npm, "npm (Node.js >= 20.19) is required: scripts/test.sh installs it, or run -m 'not typescript'"
    root = tmp_path_factory.mktemp("typescript")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(HERE / "typescript" / name, root / name)
    (root / "schema.json").write_text(json.dumps(served_schema))
    for command in (
        [npm, "ci", "--no-audit", "--no-fund"],
        [str(root / "node_modules" / ".bin" / "openapi-ts"), "-i", "schema.json", "-o", "src/client"],
    ):
        result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
    return root


def test_the_documented_sign_in_drives_the_api(typescript_client, live_server, editor_token):
    block = documented_client_block().replace('"http://127.0.0.1:8000"', json.dumps(live_server.url))
    script = (
        'import { createClient } from "./src/client/client";\n'
        'import * as sdk from "./src/client/sdk.gen";\n'
        f"const key = {json.dumps(editor_token)};\n"
        f"const NAME = {json.dumps(NAME)};\n" + block + SCENARIO
    )
    (typescript_client / "scenario.ts").write_text(script)
    result = subprocess.run(
        [str(typescript_client / "node_modules" / ".bin" / "tsx"), "scenario.ts"],
        cwd=typescript_client,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["create"][:2] == [201, NAME]
    assert out["create"][2].endswith("/api/products/TS%20mug%20%E2%98%95%2050%25%20a.b%23%3F/")
    assert out["read"] == [200, "12.50", "MISS"]
    assert out["not_modified"] == [304, True]  # docs/api-clients.md: data undefined, error {}
    assert out["patch"] == [200, "13.00", 10]
    assert out["stock_refused"] == [409, "Not enough stock: the quantity would become negative."]
    assert out["duplicate"][0] == 409
    assert out["delete"] == [204]
    assert not Product.objects.filter(name=NAME).exists()
