"""The Flask reference: the original service's approach, against the bench's data.

Flask + redis-py + raw sqlite3, as the service this project replaced:
``GET /products/<name>`` reads Redis, and on a miss SELECTs the row and SETEXes
it for 60 s; ``POST /products`` INSERTs. Only what the original did (no auth,
no throttling, no validation beyond types), with a persistent per-thread SQLite
connection so the reference is as fast as that approach gets. The connection
uses the journal settings the service uses (WAL, synchronous=NORMAL), so a
create compares the two stacks, not two fsync policies.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from datetime import UTC, datetime

import redis
from flask import Flask, Response, jsonify, request

app = Flask(__name__)
_redis = redis.Redis.from_url(os.environ["REDIS_URL"])
_prefix = os.environ.get("CACHE_KEY_PREFIX", "flask") + ":product:"
_db_path = os.environ["BENCH_SQLITE"]
_local = threading.local()


def _db() -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = sqlite3.connect(_db_path, timeout=20, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    return conn


@app.get("/products/<name>")
def get_product(name: str):
    key = _prefix + name
    cached = _redis.get(key)
    if cached is not None:
        return Response(cached, mimetype="application/json")
    row = (
        _db().execute("SELECT name, price, quantity FROM products_product WHERE name = ?", (name,)).fetchone()
    )
    if row is None:
        return jsonify(error="not found"), 404
    body = json.dumps(
        {"type": "Product", "count": 1, "attributes": {"name": row[0], "price": row[1], "quantity": row[2]}}
    )
    _redis.setex(key, 60, body)
    return Response(body, mimetype="application/json")


@app.post("/products")
def create_product():
    data = request.get_json()
    now = datetime.now(UTC).isoformat()
    _db().execute(
        "INSERT INTO products_product (name, price, quantity, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        (data["name"], data["price"], data.get("quantity", 0), now, now),
    )
    return jsonify(data), 201
