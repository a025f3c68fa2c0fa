"""The portal in headless Chromium (Debian's ``chromium``, driven by Playwright; no
browser is downloaded). Screenshots go to test-artifacts/portal/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from faxbox.portal.app import create_app
from faxbox.portal.deps import PortalDeps
from faxbox.portal.service import bound_port, serve
from faxbox.shared.store import Store
from tests.integration.portal.seed import PASSWORD, World
from tests.support import servers_required

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "portal"


def _require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium (deploy/local/apt.sh)"
        if servers_required():
            pytest.fail(message)
        pytest.skip(message)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    _require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def base_url(deps: PortalDeps) -> AsyncIterator[str]:
    async with serve(create_app(deps), "127.0.0.1", 0) as server:
        yield f"http://127.0.0.1:{bound_port(server)}"


async def _sign_in(page: Page, base_url: str, email: str) -> None:
    await page.goto(f"{base_url}/login")
    await page.fill("#email", email)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base_url}/faxes")


async def test_user_filters_opens_a_fax_and_downloads_its_pdf(
    browser: Browser, base_url: str, world: World, tmp_path: Path
) -> None:
    context = await browser.new_context(
        accept_downloads=True, viewport={"width": 1280, "height": 800}
    )
    page = await context.new_page()
    alice = world.a.users[0]
    await _sign_in(page, base_url, alice.email)
    rows = page.locator("#fax-table tbody tr")
    await expect(rows).to_have_count(3)  # the last 30 days
    await expect(page.locator("#range-note")).to_contain_text("outside this range")
    await page.screenshot(path=str(ARTIFACTS / "faxes-default-range.png"), full_page=True)

    # Widen the range: the older faxes appear.
    start = (world.now - timedelta(days=200)).date().isoformat()
    await page.fill("#start", start)
    await page.click("#filters button[type=submit]")
    await expect(rows).to_have_count(7)
    assert f"start={start}" in page.url
    await page.screenshot(path=str(ARTIFACTS / "faxes-wide-range.png"), full_page=True)

    # Search by number narrows it to one fax.
    number = (await rows.nth(1).locator("td").nth(2).inner_text()).split()[0]
    await page.fill("#number", number[-5:])
    await page.click("#filters button[type=submit]")
    await expect(rows).to_have_count(1)

    await rows.first.get_by_text("Details").click()
    await expect(page.locator("h1")).to_contain_text(number)
    await expect(page.locator("#timeline tbody tr")).to_have_count(2)
    await page.screenshot(path=str(ARTIFACTS / "fax-detail.png"), full_page=True)

    async with page.expect_download() as info:
        await page.click("#download-pdf")
    download = await info.value
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    assert saved.read_bytes() == world.pdf
    assert saved.suffix == ".pdf"
    await context.close()


async def test_reseller_adds_a_number_and_the_admin_assigns_it(
    browser: Browser, base_url: str, world: World, store: Store
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    blocked: list[str] = []
    page.on(
        "console",
        lambda message: (
            blocked.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    # The reseller puts a number into its customer's inventory.
    await _sign_in(page, base_url, world.reseller.admin.email)
    await page.goto(f"{base_url}/admin/accounts/{world.a.account.id}")
    await page.fill("#new_number", "12125550188")
    await page.click("form[action$='/numbers'] button[type=submit]")
    await expect(page.locator(".flash")).to_contain_text("+12125550188 added")
    # A number another tenant holds is refused with a reason, and nothing changes.
    await page.fill("#new_number", "+12125550121")
    await page.click("form[action$='/numbers'] button[type=submit]")
    await expect(page.locator(".error")).to_contain_text("belongs to another account")
    await page.screenshot(path=str(ARTIFACTS / "reseller-inventory.png"), full_page=True)
    await context.clear_cookies()

    await _sign_in(page, base_url, world.a.admin.email)
    await page.click("text=Administration")
    await expect(page.locator("#users")).to_contain_text(world.a.users[1].email)
    await expect(page.locator("#new_number")).to_have_count(0)  # not the admin's to add
    await page.fill("#help_number", "2125550100")
    await page.click("#show-help button[type=submit]")
    await expect(page.locator("#help-to")).to_have_text("+12125550100@acme.portal.test")
    await page.screenshot(path=str(ARTIFACTS / "admin-account.png"), full_page=True)

    await page.click(f"text={world.a.users[1].email}")
    await page.select_option("#number", "+12125550188")
    await page.click("form[action$='/numbers'] button[type=submit]")
    await expect(page.locator(".flash")).to_contain_text("assigned")
    await expect(page.locator("#numbers")).to_contain_text("+12125550188")
    assignment = await store.find_number("+12125550188")
    assert assignment is not None
    assert assignment.faxbox_id == world.a.faxboxes[world.a.users[1].id].id

    # Switching the sender check off says what that means.
    await expect(page.locator("#sender-auth-warning")).to_have_count(0)
    await page.select_option("#sender_auth", "off")
    await page.click("#settings button[type=submit]")
    await expect(page.locator("#sender-auth-warning")).to_contain_text("anyone")
    await page.screenshot(path=str(ARTIFACTS / "admin-user.png"), full_page=True)
    await page.select_option("#sender_auth", "required")
    await page.click("#settings button[type=submit]")
    await expect(page.locator("#sender-auth-warning")).to_have_count(0)
    # The stylesheet came from the portal itself, and the policy blocked nothing.
    color = await page.evaluate("getComputedStyle(document.querySelector('header')).display")
    assert color == "flex"
    assert blocked == []
    await context.close()


def test_artifacts_folder_is_ignored_by_git() -> None:
    gitignore = Path(__file__).resolve().parents[3] / ".gitignore"
    assert "/test-artifacts/" in gitignore.read_text()
