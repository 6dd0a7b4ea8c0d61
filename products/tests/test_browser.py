"""Real-browser tests: the admin, the browsable API and the docs, as people use them.

Headless Chromium (the system package, installed by scripts/ensure_chromium.sh)
driven by Playwright's sync API against pytest-django's live server, which runs
in this process with the test database and the test Redis prefix. The JSON API
is read with ``requests`` over real HTTP, so the cache is exercised as a
client sees it.

On failure a test leaves a screenshot, the page's HTML and its console log in
test-artifacts/browser/<test>/ and prints that path.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import requests
from django.contrib.auth.models import Permission, User
from playwright.sync_api import Browser, Page, expect, sync_playwright

from products.models import Product
from products.views import ProductViewSet

pytestmark = pytest.mark.browser

BASE_DIR = Path(__file__).resolve().parents[2]
ARTIFACTS = BASE_DIR / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling home, which
# here only produces refused connections and noise.
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
TIMEOUT_MS = 15_000


# --- Browser, page, artifacts -----------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole module."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: run scripts/ensure_chromium.sh "
            "(or scripts/test.sh, which calls it), or set CHROMIUM_PATH"
        )
    # Playwright's sync API keeps an asyncio loop running in this thread while it
    # is started, and Django refuses ORM calls from such a thread. The tests'
    # ORM calls are plain blocking calls in between browser steps, so allow them
    # for this module only, and put the previous value back afterwards.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    # Assertions wait as long as actions do (the machine may be busy).
    expect.set_options(timeout=TIMEOUT_MS)
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def console() -> list[str]:
    """The page's console messages, page errors and failed requests, in order."""
    return []


@pytest.fixture
def page(browser: Browser, live_server, console: list[str], request) -> Iterator[Page]:
    """A fresh browser context (no cookies) on the live server; artifacts on failure."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("console", lambda msg: console.append(f"[{msg.type}] {msg.text}"))
    page.on("pageerror", lambda exc: console.append(f"[pageerror] {exc}"))
    page.on("requestfailed", lambda req: console.append(f"[requestfailed] {req.url} {req.failure}"))
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(folder / "screenshot.png"), full_page=True)
            (folder / "page.html").write_text(page.content())
        except Exception as exc:  # a crashed page must not hide the test's own failure
            console.append(f"[artifacts] could not capture the page: {exc}")
        (folder / "console.log").write_text(f"url: {page.url}\n" + "\n".join(console) + "\n")
        print(f"\nbrowser artifacts (screenshot, page.html, console.log): {folder}")
    context.close()


# --- Helpers ----------------------------------------------------------------


def api_url(live_server, name: str) -> str:
    return f"{live_server.url}/api/products/{quote(name, safe='')}/"


def api_get(live_server, name: str) -> requests.Response:
    return requests.get(api_url(live_server, name), headers={"Accept": "application/json"}, timeout=10)


def warm(live_server, name: str) -> dict:
    """Read the product twice so it is cached: a missed invalidation would then show."""
    api_get(live_server, name)
    response = api_get(live_server, name)
    assert response.status_code == 200, response.text
    assert response.headers["X-Cache"] == "HIT"
    return response.json()


def make_admin() -> User:
    return User.objects.create_superuser("boss", "boss@example.com", "pw-boss")


def make_editor() -> User:
    user = User.objects.create_user("editor", password="pw-editor")
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["add_product", "change_product", "delete_product"])
    )
    return user


def admin_login(page: Page) -> None:
    page.goto("/admin/login/?next=/admin/products/product/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pw-boss")
    page.click("input[type=submit]")
    expect(page.locator("#content h1")).to_have_text("Select product to change")


def changelist_names(page: Page) -> list[str]:
    """The names listed on the admin changelist (call once the navigation committed)."""
    page.wait_for_load_state("domcontentloaded")
    expect(page.locator("#changelist-form")).to_be_attached()
    return page.locator("#result_list tbody th.field-name a").all_inner_texts()


def shown_json(page: Page) -> dict:
    """The JSON body the browsable API shows under its response headers."""
    page.wait_for_load_state("domcontentloaded")
    text = page.locator(".response-info pre").inner_text()
    return json.loads(text[text.index("{") :])


# --- Admin ------------------------------------------------------------------


def test_admin_add_edit_search_filter_delete_are_seen_by_the_api_at_once(page, live_server):
    make_admin()
    Product.objects.create(name="Anvil", price="80.00", quantity=3)
    Product.objects.create(name="Bucket", price="4.50", quantity=0)
    admin_login(page)

    # Add a product: the API knows it at once (it answered 404 just before).
    assert api_get(live_server, "Desk lamp").status_code == 404
    page.click(".object-tools a.addlink")
    # The add form's script (admin/js/change_form.js) focuses the name field
    # when it runs: filling before it can type the price into the name (seen
    # under load in CI), so wait for the page to load.
    page.wait_for_load_state()
    page.fill("#id_name", "Desk lamp")
    page.fill("#id_price", "24.90")
    page.fill("#id_quantity", "7")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_contain_text("was added successfully")
    assert changelist_names(page) == ["Anvil", "Bucket", "Desk lamp"]
    created = api_get(live_server, "Desk lamp")
    assert created.status_code == 200
    assert created.json()["price"] == "24.90" and created.json()["quantity"] == 7

    # Edit its price in the change form, with the old price cached.
    assert warm(live_server, "Desk lamp")["price"] == "24.90"
    page.click("#result_list a:text-is('Desk lamp')")
    expect(page.locator("#id_price")).to_have_value("24.90")
    page.fill("#id_price", "19.50")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_contain_text("was changed successfully")
    after_edit = api_get(live_server, "Desk lamp")
    assert after_edit.json()["price"] == "19.50"
    assert after_edit.headers["X-Cache"] == "MISS"

    # Search: only matching names are listed.
    page.fill("#searchbar", "lamp")
    page.click("#changelist-search input[type=submit]")
    expect(page).to_have_url(re.compile(r"q=lamp"))
    assert changelist_names(page) == ["Desk lamp"]
    expect(page.locator("#changelist-search")).to_contain_text("1 result")

    # The in-stock filter: Bucket (quantity 0) is the only one out of stock.
    page.goto("/admin/products/product/")
    filters = page.locator("#changelist-filter")
    filters.get_by_role("link", name="Yes", exact=True).click()
    expect(page).to_have_url(re.compile(r"in_stock=yes"))
    assert changelist_names(page) == ["Anvil", "Desk lamp"]
    page.locator("#changelist-filter").get_by_role("link", name="No", exact=True).click()
    expect(page).to_have_url(re.compile(r"in_stock=no"))
    assert changelist_names(page) == ["Bucket"]

    # "Delete selected" on two products, both cached: both are gone at once.
    page.goto("/admin/products/product/")
    for name in ["Anvil", "Desk lamp"]:
        warm(live_server, name)
        page.locator("#result_list tbody tr", has=page.locator(f"th.field-name a:text-is('{name}')")).locator(
            "input.action-select"
        ).check()
    page.select_option("select[name=action]", "delete_selected")
    page.click("button[name=index]")
    expect(page.locator("#content h1")).to_have_text("Delete multiple objects")
    page.click("input[type=submit]")
    expect(page.locator(".messagelist .success")).to_contain_text("Successfully deleted 2 products")
    assert changelist_names(page) == ["Bucket"]
    assert api_get(live_server, "Anvil").status_code == 404
    assert api_get(live_server, "Desk lamp").status_code == 404
    assert api_get(live_server, "Bucket").status_code == 200
    assert list(Product.objects.values_list("name", flat=True)) == ["Bucket"]


def test_admin_deletes_every_product_of_a_filtered_list_past_the_field_limit(page, live_server):
    # "Select all 1,050 products" then "Delete selected": Django's confirmation
    # posted 1,050 ids back, past DATA_UPLOAD_MAX_NUMBER_FIELDS (400).
    make_admin()
    Product.objects.bulk_create(Product(name=f"Bulk {i:04}", price="1.00") for i in range(1050))
    Product.objects.create(name="Keep", price="2.00")
    assert warm(live_server, "Bulk 0007")["price"] == "1.00"
    admin_login(page)
    page.goto("/admin/products/product/?q=Bulk")
    page.check("#action-toggle")
    page.click("div.actions span.question a")  # "Select all 1050 products"
    page.select_option("select[name=action]", "delete_selected")
    page.click("button[name=index]")
    expect(page.locator("#content h1")).to_have_text("Delete multiple objects")
    expect(page.locator("#content")).to_contain_text("… and 950 more")
    page.click("input[type=submit]")
    expect(page.locator(".messagelist .success")).to_contain_text("Successfully deleted 1050 products")
    assert list(Product.objects.values_list("name", flat=True)) == ["Keep"]
    assert api_get(live_server, "Bulk 0007").status_code == 404


def test_admin_refuses_a_negative_price_and_keeps_the_product(page, live_server):
    make_admin()
    product = Product.objects.create(name="Kettle", price="35.00", quantity=2)
    before = warm(live_server, "Kettle")
    admin_login(page)

    page.goto(f"/admin/products/product/{product.pk}/change/")
    page.fill("#id_price", "-5")
    page.click("input[name=_save]")

    expect(page.locator(".errornote")).to_be_visible()
    expect(page.locator(".field-price .errorlist")).to_contain_text(
        "Price must be greater than or equal to 0."
    )
    expect(page.locator("#id_price")).to_have_value("-5")  # the form comes back for correction
    after = api_get(live_server, "Kettle")
    assert after.status_code == 200
    assert after.json() == before
    product.refresh_from_db()
    assert str(product.price) == "35.00" and product.quantity == 2


# --- Browsable API ------------------------------------------------------------


def test_browsable_api_list_pagination_filters_login_and_create(page, live_server, settings):
    make_editor()
    # Whatever the paginator's page size, make one page and a bit more.
    page_size = (
        getattr(ProductViewSet.pagination_class, "page_size", None) or settings.REST_FRAMEWORK["PAGE_SIZE"]
    )
    Product.objects.bulk_create(
        Product(name=f"Gadget {i:03d}", price=f"{i}.00", quantity=i % 3) for i in range(page_size + 3)
    )

    # The list renders, paginated: a Next link leads to the rest.
    page.goto("/api/products/")
    expect(page.locator(".page-header h1")).to_have_text("Product List")
    first = shown_json(page)
    assert len(first["results"]) == page_size and first["next"]
    assert first["results"][0]["name"] == "Gadget 000"
    page.locator("ul.pager, ul.pagination").get_by_role("link", name=re.compile(r"^Next")).click()
    expect(page).to_have_url(re.compile(r"cursor=|page="))
    second = shown_json(page)
    assert [p["name"] for p in second["results"]] == [
        f"Gadget {i:03d}" for i in range(page_size, page_size + 3)
    ]
    assert second["previous"] and not second["next"]
    # Another ordering, chosen on the second page, starts at the first page:
    # the link kept the cursor, issued for this ordering, and answered 400.
    page.get_by_role("button", name="Filters").click()
    expect(page.locator("#filtersModal")).to_be_visible()
    page.locator("#filtersModal a", has_text="price - descending").click()
    expect(page).to_have_url(re.compile(r"ordering=-price"))
    assert "cursor=" not in page.url
    by_price = shown_json(page)
    assert by_price["results"][0]["name"] == f"Gadget {page_size + 2:03d}"

    # Filters: the button opens django-filter's form; searching narrows the list.
    page.goto("/api/products/")
    page.get_by_role("button", name="Filters").click()
    modal = page.locator("#filtersModal")
    expect(modal).to_be_visible()
    # Every field is labelled for what it filters (method filters once read "[invalid name]:").
    expect(modal).not_to_contain_text("[invalid name]")
    expect(modal.locator("label[for=id_search]")).to_have_text(re.compile(r"^\s*Name contains"))
    expect(modal.locator("label[for=id_in_stock]")).to_have_text(re.compile(r"^\s*In stock"))
    modal.locator("input[name=search]").fill("gadget 01")
    modal.locator("form").filter(has=page.locator("input[name=search]")).locator("[type=submit]").click()
    expect(page).to_have_url(re.compile(r"search=gadget\+01"))
    filtered = shown_json(page)
    assert [p["name"] for p in filtered["results"]] == [f"Gadget {i:03d}" for i in range(10, 20)]

    # Anonymous users get no forms; the navbar's login link logs in and comes back.
    page.goto("/api/products/")
    expect(page.locator("#post-object-form")).to_have_count(0)
    page.locator(".navbar").get_by_role("link", name="Log in").click()
    page.wait_for_load_state()  # the username field's autofocus, before typing elsewhere
    page.fill("#id_username", "editor")
    page.fill("#id_password", "pw-editor")
    page.click("input[type=submit]")
    expect(page).to_have_url(re.compile(r"/api/products/$"))
    expect(page.locator(".navbar")).to_contain_text("editor")

    # Create with the HTML form.
    page.locator("a[name=html-tab]").click()
    form = page.locator("#post-object-form form")
    form.locator("[name=name]").fill("Teapot")
    form.locator("[name=price]").fill("12.30")
    form.locator("[name=quantity]").fill("4")
    form.get_by_role("button", name="POST").click()
    expect(page.locator(".response-info")).to_contain_text("HTTP 201 Created")
    assert shown_json(page)["name"] == "Teapot"
    assert api_get(live_server, "Teapot").json()["price"] == "12.30"

    # Create with the raw JSON form.
    page.goto("/api/products/")
    page.locator("a[name=raw-tab]").click()
    raw = page.locator("#post-generic-content-form form")
    expect(raw.locator("select[name=_content_type]")).to_have_value("application/json")
    # Pre-filled with the default quantity (it read null: "This field may not be null." if left).
    assert json.loads(raw.locator("textarea[name=_content]").input_value())["quantity"] == 0
    raw.locator("textarea[name=_content]").fill(
        json.dumps({"name": "Milk jug", "price": "7.25", "quantity": 1})
    )
    raw.get_by_role("button", name="POST").click()
    expect(page.locator(".response-info")).to_contain_text("HTTP 201 Created")
    assert shown_json(page)["name"] == "Milk jug"

    # The detail page shows what was created.
    page.goto(f"/api/products/{quote('Milk jug')}/")
    expect(page.locator(".page-header h1")).to_have_text("Product Instance")
    detail = shown_json(page)
    assert (detail["name"], detail["price"], detail["quantity"]) == ("Milk jug", "7.25", 1)
    assert Product.objects.filter(name__in=["Teapot", "Milk jug"]).count() == 2

    # A body over the size limit: the page says so. The form shows an HTML
    # answer and reloads for any other, so a JSON 413 left "HTTP 200 OK" and
    # the unchanged product on screen.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000  # the live server runs in this process
    page.locator("a[name=raw-tab]").first.click()
    raw = page.locator("#put-generic-content-form form")
    raw.locator("textarea[name=_content]").fill(json.dumps({"name": "z" * 20_000}))
    raw.get_by_role("button", name="PATCH").click()
    expect(page.locator("h1")).to_have_text("Request too large")
    expect(page.locator("body")).to_contain_text("nothing was changed")
    assert Product.objects.get(name="Milk jug").price == Decimal("7.25")


def test_login_logout_and_breadcrumbs_keep_a_product_name_with_hash_and_space(page, live_server):
    # DRF wrote the decoded path into ?next= and the breadcrumbs: for "C# book"
    # the browser cut the link at "#", and logging in showed product "C".
    make_editor()
    Product.objects.create(name="C# book", price="30.00", quantity=1)
    Product.objects.create(name="C", price="1.00", quantity=1)
    page.goto(f"/api/products/{quote('C# book')}/stock/")
    page.locator(".breadcrumb").get_by_role("link", name="Product Instance").click()
    assert shown_json(page)["name"] == "C# book"
    page.locator(".navbar").get_by_role("link", name="Log in").click()
    page.wait_for_load_state()  # the username field's autofocus, before typing elsewhere
    page.fill("#id_username", "editor")
    page.fill("#id_password", "pw-editor")
    page.click("input[type=submit]")
    expect(page.locator(".navbar")).to_contain_text("editor")
    assert shown_json(page)["name"] == "C# book"
    page.locator(".navbar .dropdown-toggle").click()
    page.locator(".navbar").get_by_role("link", name="Log out").click()
    expect(page.locator(".navbar")).to_contain_text("Log in")
    assert shown_json(page)["name"] == "C# book"

    # Logged in again (from another page), the product page is not the one
    # cached under the first login: its forms carry this session's CSRF token.
    page.goto("/api/?search=x")
    page.locator(".navbar").get_by_role("link", name="Log in").click()
    page.wait_for_load_state()  # the username field's autofocus, before typing elsewhere
    page.fill("#id_username", "editor")
    page.fill("#id_password", "pw-editor")
    page.click("input[type=submit]")
    expect(page).to_have_url(re.compile(r"/api/\?search=x$"))  # the query string survives the login
    page.goto(f"/api/products/{quote('C# book')}/")
    page.locator("a[name=raw-tab]").click()
    raw = page.locator("#put-generic-content-form form")
    raw.locator("textarea[name=_content]").fill(json.dumps({"quantity": 7}))
    raw.get_by_role("button", name="PATCH").click()
    expect(page.locator(".request-info")).to_contain_text("PATCH")  # the PATCH's own answer
    expect(page.locator(".response-info")).to_contain_text("HTTP 200 OK")
    assert shown_json(page)["quantity"] == 7
    assert Product.objects.get(name="C# book").quantity == 7


# --- Docs -----------------------------------------------------------------------


def test_docs_render_offline_and_try_it_out_reads_a_product(page, live_server, console):
    Product.objects.create(name="Globe", price="42.00", quantity=1)
    server_host = urlsplit(live_server.url).netloc
    blocked: list[str] = []
    served: list[str] = []

    def only_the_server(route):
        url = route.request.url
        if urlsplit(url).netloc == server_host:
            served.append(url)
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.route("**/*", only_the_server)
    page.goto("/api/docs/")
    try:
        expect(page.locator(".opblock").first).to_be_visible()
    except AssertionError as exc:
        raise AssertionError(f"no operations rendered; requests to other hosts: {blocked}") from exc
    paths = page.locator(".opblock-summary-path").evaluate_all("els => els.map(e => e.dataset.path)")
    assert "/api/products/" in paths and "/api/products/{name}/" in paths
    assert page.locator(".opblock-get .opblock-summary-path[data-path='/api/products/{name}/']").count() == 1

    get_one = page.locator(".opblock-get").filter(
        has=page.locator(".opblock-summary-path[data-path='/api/products/{name}/']")
    )
    get_one.locator(".opblock-summary").click()
    get_one.locator("button.try-out__btn").click()
    get_one.locator("input[placeholder='name']").fill("Globe")
    get_one.locator("button.execute").click()
    status = get_one.locator(".live-responses-table tr.response td.response-col_status").first
    expect(status).to_have_text("200")
    expect(get_one.locator(".live-responses-table .microlight").first).to_contain_text('"Globe"')

    assert blocked == [], f"the docs page needed other hosts: {blocked}"
    assert [line for line in console if line.startswith(("[error]", "[pageerror]"))] == []
    assert any("/static/drf_spectacular_sidecar/" in url for url in served)
