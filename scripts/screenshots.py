#!/usr/bin/env python3
"""Take the screenshots in docs/development.md: admin product list, browsable API detail, API docs.

Starts the service on a throwaway SQLite database (in a temp dir) with the
running Redis (a key prefix of its own, deleted at the end), seeds a few
products and an admin user, and photographs three pages with Playwright and
the system Chromium (scripts/ensure_chromium.sh installs it).

    .venv/bin/python scripts/screenshots.py   # writes docs/screenshots/*.png
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
import requests
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--disable-quic",
]
PRODUCTS = [
    ("Anglepoise lamp", "89.00", 4),
    ("Cast-iron kettle", "54.50", 0),
    ("Ceramic teapot", "24.90", 12),
    ("Desk fan", "39.99", 7),
    ("Linen tea towel", "8.75", 40),
    ("Oak chopping board", "32.00", 0),
    ("Stoneware mug", "11.20", 85),
    ("Wool blanket", "120.00", 3),
]
SEED = f"""
from django.contrib.auth.models import User
from products.models import Product
User.objects.create_superuser("admin", "admin@example.com", "admin-password")
for name, price, quantity in {PRODUCTS!r}:
    Product.objects.create(name=name, price=price, quantity=quantity)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"Chromium not found at {CHROMIUM}: run scripts/ensure_chromium.sh or set CHROMIUM_PATH")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"screenshots-{uuid.uuid4().hex[:8]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    OUT.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="productsite-screenshots-") as tmp:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "productsite.settings",
            # DEBUG lets whitenoise serve static files without collectstatic.
            "DEBUG": "1",
            "DATABASE_URL": f"sqlite:///{Path(tmp) / 'screenshots.sqlite3'}",
            "REDIS_URL": redis_url,
            "CACHE_KEY_PREFIX": prefix,
            "LOG_LEVEL": "WARNING",
        }
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        subprocess.run([*manage, "shell", "-v", "0", "-c", SEED], cwd=ROOT, env=env, check=True)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "productsite.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        try:
            for _ in range(200):
                try:
                    if requests.get(f"{url}/health/", timeout=1).ok:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.05)
            else:
                sys.exit("the server did not start")
            shoot(url)
        finally:
            server.terminate()
            server.wait(timeout=10)
            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=f"{prefix}:*"))
            if keys:
                client.unlink(*keys)
    for png in sorted(OUT.glob("*.png")):
        print(png.relative_to(ROOT))
    return 0


def shoot(url: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 800})
        page = context.new_page()

        page.goto("/admin/login/?next=/admin/products/product/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "admin-password")
        page.click("input[type=submit]")
        page.wait_for_selector("#result_list")
        page.screenshot(path=str(OUT / "admin-product-list.png"))

        page.goto("/api/products/Ceramic%20teapot/")
        page.wait_for_selector(".response-info")
        page.screenshot(path=str(OUT / "api-product-detail.png"))

        page.goto("/api/docs/")
        page.wait_for_selector(".opblock")
        page.screenshot(path=str(OUT / "api-docs.png"))
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
