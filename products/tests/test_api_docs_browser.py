"""The docs pages in a real browser with the internet cut off, as a new user would try them."""

from __future__ import annotations

import shutil
from urllib.parse import urlparse

import pytest

from .support.processes import manage, server_env

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.database_independent]


@pytest.fixture
def production_server(sqlite_gunicorn, tmp_path):
    """gunicorn with DEBUG off serving collectstatic's output, as in production."""
    static_root = tmp_path / "static"
    collected = manage(server_env(STATIC_ROOT=str(static_root)), "collectstatic", "--noinput", "-v", "0")
    assert collected.returncode == 0, collected.stderr
    return sqlite_gunicorn(workers=1, threads=2, DEBUG="0", STATIC_ROOT=str(static_root))


def _browser(playwright):
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    return playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])


def test_swagger_ui_works_offline_and_try_it_out_reaches_the_service(production_server):
    from playwright.sync_api import sync_playwright

    origin = urlparse(production_server.url).netloc
    blocked: list[str] = []

    def offline(route):
        # The network is cut off: anything not served by the app fails.
        if urlparse(route.request.url).netloc == origin:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page()
            page.route("**/*", offline)
            # ReDoc's logo (its CDN, refused by the page's CSP) and a missing
            # /favicon.ico each put an error in the console.
            errors: list[str] = []
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(production_server.url + "/api/docs/")
            operation = page.locator("#operations-health-health_retrieve")
            operation.wait_for(timeout=15000)
            operation.locator(".opblock-summary").click()
            operation.locator(".try-out__btn").click()
            operation.locator(".execute").click()
            status = operation.locator(".live-responses-table .response .response-col_status").first
            status.wait_for(timeout=10000)
            assert status.inner_text().strip().startswith("200")
            assert (
                '"database": "ok"'
                in operation.locator(".live-responses-table .microlight").first.inner_text()
            )

            page.goto(production_server.url + "/api/redoc/")
            page.get_by_text("Product catalogue API").first.wait_for(timeout=15000)
            page.get_by_text("Change the stock atomically").first.wait_for(state="attached", timeout=5000)
            page.get_by_text("API docs by Redocly").first.wait_for(state="attached", timeout=5000)
            page.wait_for_load_state("networkidle")
        finally:
            browser.close()
    assert blocked == []
    assert errors == []


def test_swagger_try_it_out_starts_from_a_sensible_product(production_server):
    from playwright.sync_api import sync_playwright

    server = production_server
    with sync_playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page()
            page.goto(server.url + "/api/docs/")
            operation = page.locator("#operations-products-api_products_create")
            operation.wait_for(timeout=15000)
            operation.locator(".opblock-summary").click()
            operation.locator(".try-out__btn").click()
            body = operation.locator("textarea.body-param__text")
            body.wait_for(timeout=10000)
            assert '"name": "Blue mug"' in body.input_value()
            assert '"price": "12.50"' in body.input_value()
            # The original service's routes are grouped and named for what they are.
            page.locator("#operations-legacy-legacy_products_create").wait_for(timeout=5000)
        finally:
            browser.close()
