"""Schemathesis hooks for the contract run (test_api_contract.py).

JSON Schema cannot say "a JSON number with at most 2 decimal places":
``multipleOf: 0.01`` is computed in floating point, and validators then reject
valid prices (19.99 / 0.01 = 1998.9999999999998). So the schema's number form
of a price gives the rule in its description only (docs/api-clients.md), and
the fuzzer's in-range number prices are rounded to cents here: a
schema-valid case stays a valid price, and every other generated value
(strings, wrong types, out-of-range numbers) is sent as generated.
"""

from __future__ import annotations

import schemathesis

PRICE_MAX = 9999999999.99


@schemathesis.hook
def map_body(context, body):
    price = body.get("price") if isinstance(body, dict) else None
    if isinstance(price, float) and 0 <= price <= PRICE_MAX:
        return {**body, "price": round(price, 2)}
    return body
