"""The /ui admin page in real headless Chromium: browse -> view -> edit -> delete.

Needs Debian's ``chromium`` (``/usr/bin/chromium``; .ci/run installs it) and Playwright
for Python, which drives that binary (no browser download). A screenshot of each step
is kept in tests/artifacts/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import satchel
import support_server
from satchel.server import Config

CHROMIUM = os.environ.get("SATCHEL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("SATCHEL_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)", pytrace=False)
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def site() -> Iterator[tuple[str, str]]:
    """A server with an admin token and a tenant holding a few values."""
    running = support_server.serve("memory://", Config())
    try:
        admin = running.tenant(name="ops", prefix="", admin=True)
        user = running.tenant(name="shop", prefix="shop:", quota_bytes=1_000_000)
        with satchel.open(f"{running.url}?token={user}", scope="orders") as store:
            for i in range(60):
                store.set(f"order:{i:03}", {"id": i, "items": ["tea", "cake"], "paid": i % 2 == 0})
            store.set("note", "hello <b>world</b>")
            store.set("blob", b"\x00\x01\xfe\xff")
        yield running.url, admin
    finally:
        support_server.stop(running)


def test_browse_view_edit_delete(browser, site):
    url, admin = site
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(bypass_csp=True)  # type: ignore[attr-defined] # for wait_for_function
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/ui")
    page.fill("#token", admin)
    page.click("text=Open")

    # usage of every tenant against its quota (admin token)
    page.wait_for_selector("#usage tr[data-tenant='shop']")
    shop = page.inner_text("#usage tr[data-tenant='shop']")
    assert "1000000" in shop and "read-write" in shop

    # the admin (prefix "") sees the tenant's scope by its server-side name
    page.click("a[data-scope='shop:orders']")
    page.wait_for_selector("tr.key")
    assert page.locator("tr.key").count() == 50  # one page
    page.click("#more")
    page.wait_for_function("document.querySelectorAll('tr.key').length == 62")
    page.fill("#pattern", "order:01?")
    page.click("text=Browse")
    page.wait_for_function("document.querySelectorAll('tr.key').length == 10")
    page.screenshot(path=str(ARTIFACTS / "ui-browse.png"), full_page=True)

    # view a JSON value with its metadata
    page.click("tr[data-key='order:013']")
    page.wait_for_selector("#view:not([hidden])")
    assert '"items"' in page.inner_text("#value") and "version" in page.inner_text("#meta")
    page.screenshot(path=str(ARTIFACTS / "ui-view.png"), full_page=True)

    # edit it as JSON
    page.fill("#edit", '{"id": 13, "paid": true}')
    page.click("#save")
    page.wait_for_function("document.querySelector('#value').textContent.includes('true')")
    assert "2" in page.inner_text("#meta")  # version 2

    # a str shows as text (never as HTML), bytes as hex
    page.fill("#pattern", "*")
    page.click("text=Browse")
    page.click("tr[data-key='note']")
    page.wait_for_function("document.querySelector('#value').textContent.includes('<b>')")
    page.click("tr[data-key='blob']")
    page.wait_for_function("document.querySelector('#value').textContent == 'hex: 0001feff'")

    # delete with confirmation: dismissing keeps the key, accepting deletes it
    page.click("tr[data-key='order:013']")
    page.wait_for_function("document.querySelector('#value').textContent.includes('13')")
    page.once("dialog", lambda d: d.dismiss())
    page.click("#delete")
    assert page.locator("tr[data-key='order:013']").count() == 1
    page.once("dialog", lambda d: d.accept())
    page.click("#delete")
    page.wait_for_function("!document.querySelector(\"tr[data-key='order:013']\")")
    assert page.locator("#view").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "ui-deleted.png"), full_page=True)
    assert errors == []
    page.close()


def test_wrong_token_shows_an_error(browser, site):
    url, _ = site
    page = browser.new_page(bypass_csp=True)  # type: ignore[attr-defined] # for wait_for_function
    page.goto(f"{url}/ui")
    page.fill("#token", "wrong")
    page.click("text=Open")
    page.wait_for_function("document.querySelector('#error').textContent.length > 0")
    assert "token" in page.inner_text("#error")
    page.close()
