"""Sending a fax, following it, and webhooks, in headless Chromium (Debian's chromium,
driven by Playwright) against the portal served by uvicorn, with real FerretDB and
RabbitMQ behind it. Screenshots go to test-artifacts/portal/."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.async_api import Browser, expect

from faxbox.history.writes import HistoryWrites
from faxbox.portal.app import create_app
from faxbox.portal.deps import PortalDeps
from faxbox.portal.preview import page_png
from faxbox.portal.security import TokenStore
from faxbox.portal.service import bound_port, serve
from faxbox.render import render, with_header
from faxbox.shared.bus import Bus, EventTap
from faxbox.shared.contracts import FaxCancelRequested, FaxSubmitted, PageReport
from faxbox.shared.secretbox import SecretBox
from faxbox.shared.settings import BrokerSettings
from faxbox.shared.store import Store
from faxbox.shared.store.signing_keys import SigningKeys
from faxbox.shared.store.webhooks import WebhookDelivery, WebhookStore
from faxbox.shared.tagline import DEFAULT_HEADER_FORMAT, header_fields, header_text
from faxbox.shared.urlguard import parse_networks
from tests.integration.portal.conftest import make_deps, portal_outbox
from tests.integration.portal.seed import World, history_doc
from tests.integration.portal.test_portal_browser import (
    ARTIFACTS,
    _sign_in,
    browser,  # noqa: F401  (the fixture)
)
from tests.unit.render.pagekit import gs_pdf, text_ps

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def three_pages() -> bytes:
    return gs_pdf([text_ps(10 * (n + 1)) for n in range(3)])


@pytest.fixture
async def bus(broker_settings: BrokerSettings) -> AsyncIterator[Bus]:
    bus = Bus(broker_settings)
    await bus.connect()
    for consumer in ("validator", "transmitter", "webhooks"):
        await bus.declare_service(consumer)
    try:
        yield bus
    finally:
        await bus.close()


@pytest.fixture
async def portal(
    store: Store, http: httpx.AsyncClient, world: World, bus: Bus
) -> AsyncIterator[tuple[str, PortalDeps]]:
    deps = make_deps(
        store,
        TokenStore(store.db),
        http,
        outbox=portal_outbox(store, bus),
        signing_keys=SigningKeys(store.db, SecretBox("browser-test-secret-0123456789abcdef")),
        webhook_networks=parse_networks(["127.0.0.0/8"]),
    )
    async with serve(create_app(deps), "127.0.0.1", 0) as server:
        yield f"http://127.0.0.1:{bound_port(server)}", deps


async def test_send_a_fax_with_a_preview_of_page_1_as_transmitted_then_cancel_it(
    browser: Browser,  # noqa: F811
    portal: tuple[str, PortalDeps],
    bus: Bus,
    world: World,
    three_pages: bytes,
    tmp_path: Path,
) -> None:
    base_url, deps = portal
    alice = world.a.users[0]
    box = world.a.faxboxes[alice.id]
    document = tmp_path / "contract.pdf"
    document.write_bytes(three_pages)
    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    page = await context.new_page()
    await _sign_in(page, base_url, alice.email)
    await page.click("text=Send a fax")
    await page.set_input_files("#file", str(document))
    await page.fill("#to", "+12125550123\n+12125550124")
    await page.click("#preview")
    await expect(page.locator("#pages")).to_have_text("3")
    await expect(page.locator("#numbers")).to_have_text("+12125550123, +12125550124")
    image = page.locator("#page1")
    await expect(image).to_be_visible()
    assert await image.evaluate("img => img.naturalWidth") > 0
    await page.screenshot(path=str(ARTIFACTS / "send-preview.png"), full_page=True)

    # The preview is page 1 as the transmitter will send it: the rendered page under
    # the faxbox's header line saying page 1/3 (made here independently of the page).
    source = await image.get_attribute("src")
    assert source is not None
    draft_id = source.split("/")[3]
    draft = await deps.sending.submissions.draft(draft_id, alice.id)
    assert draft is not None
    shown = (await page.request.get(f"{base_url}{source}")).body()
    fields = header_fields(box, "+12125550123", draft_id, draft.created_at)
    expected = page_png(
        with_header(
            render(three_pages, resolution=box.resolution).tiff,
            lambda n, total: header_text(DEFAULT_HEADER_FORMAT, fields, n, total),
        )
    )
    assert await shown == expected
    assert "page 1/3" in header_text(DEFAULT_HEADER_FORMAT, fields, 1, 3)
    top = np.asarray(Image.open(io.BytesIO(expected)).convert("L"))[:20]
    assert (top < 128).any(), "no header line on the preview"

    async with EventTap(bus, ("fax.outbound.submitted", "fax.outbound.cancel_requested")) as tap:
        await page.click("#send")
        await expect(page.locator("#status")).to_have_text("queued")
        await expect(page.locator(".flash")).to_contain_text("Sending 2 faxes")
        submitted = await tap.get(10)
        assert isinstance(submitted, FaxSubmitted)
        assert submitted.numbers == ("+12125550123", "+12125550124")
        assert submitted.channel == "portal"
        assert submitted.fax_id == draft_id  # the fax id the preview's header was made with
        assert page.url.startswith(f"{base_url}/fax/{draft_id}")
        await page.screenshot(path=str(ARTIFACTS / "send-queued.png"), full_page=True)
        await page.click("#cancel")
        await expect(page.locator(".flash")).to_contain_text("Cancelling")
        cancelled = await tap.get(10)
    assert isinstance(cancelled, FaxCancelRequested)
    assert cancelled.fax_id == draft_id
    await context.close()


async def test_a_document_that_cannot_be_faxed_is_refused_on_the_form(
    browser: Browser,  # noqa: F811
    portal: tuple[str, PortalDeps],
    world: World,
    tmp_path: Path,
) -> None:
    base_url, _ = portal
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog")
    context = await browser.new_context()
    page = await context.new_page()
    await _sign_in(page, base_url, world.a.users[0].email)
    await page.goto(f"{base_url}/send")
    await page.set_input_files("#file", str(broken))
    await page.fill("#to", "+12125550123")
    await page.click("#preview")
    await expect(page.locator(".error")).to_be_visible()
    await expect(page.locator("#to")).to_have_value("+12125550123")
    await context.close()


def _page(number: int, confirmed: bool) -> PageReport:
    return PageReport(
        page=number,
        confirmed=confirmed,
        result="MCF" if confirmed else "RTN",
        bit_rate=9600,
        ecm=True,
        x_resolution=8031,
        y_resolution=7700,
        encoding="T.6",
        length=2292,
        image_bytes=41_000,
        bad_rows=0,
        longest_bad_row_run=0,
        ecm_retries=number - 1,
    )


async def test_a_partly_sent_fax_shows_its_pages_and_can_be_sent_again(
    browser: Browser,  # noqa: F811
    portal: tuple[str, PortalDeps],
    store: Store,
    world: World,
    bus: Bus,
) -> None:
    base_url, _ = portal
    alice = world.a.users[0]
    box = world.a.faxboxes[alice.id]
    created = world.now - timedelta(minutes=5)
    original = await store.documents.put(
        world.a.account.id,
        created.strftime("%Y%m"),
        world.pdf,
        filename="report.pdf",
        content_type="application/pdf",
    )
    doc = history_doc(
        fax_id="fax_partly",
        account_id=world.a.account.id,
        user=alice,
        faxbox=box,
        created_at=created,
        remote="+12125550199",
        documents={"original": original},
    )
    doc["state"] = {
        "rank": 90,
        "status": "partially_sent",
        "result": {
            "failure_class": "line",
            "code": 49,
            "text": "The telephone call was cut off before the fax finished.",
            "reason": "call_dropped",
        },
        "pages": 1,
        "page_report": [_page(1, True).model_dump(), _page(2, False).model_dump()],
    }
    for moved in ("status", "result", "pages"):
        doc.pop(moved, None)
    await HistoryWrites(store.history).insert(world.a.account.id, doc)

    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    page = await context.new_page()
    await _sign_in(page, base_url, alice.email)
    await page.goto(f"{base_url}/fax/fax_partly")
    await expect(page.locator("#status")).to_have_text("partially sent")
    await expect(page.locator("#failure-reason")).to_have_text("call_dropped")
    rows = page.locator("#page-report tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(1)).to_contain_text("RTN")
    await expect(page.locator("#cancel")).to_have_count(0)  # it is over
    await page.screenshot(path=str(ARTIFACTS / "fax-partly-sent.png"), full_page=True)
    async with EventTap(bus, ("fax.outbound.submitted",)) as tap:
        await page.click("#resend")
        await expect(page.locator(".flash")).to_contain_text("Sent again")
        resent = await tap.get(10)
    assert isinstance(resent, FaxSubmitted)
    assert (resent.resend_of, resent.numbers, resent.document) == (
        "fax_partly",
        ("+12125550199",),
        original,
    )
    await context.close()


async def test_an_admin_sees_the_signing_key_adds_a_webhook_and_replays_a_delivery(
    browser: Browser,  # noqa: F811
    portal: tuple[str, PortalDeps],
    store: Store,
    world: World,
    bus: Bus,
) -> None:
    base_url, _ = portal
    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    page = await context.new_page()
    await _sign_in(page, base_url, world.a.admin.email)
    await page.click("text=Administration")
    await page.click("#webhooks-link")
    key = await SigningKeys(store.db, SecretBox("browser-test-secret-0123456789abcdef")).public(
        world.a.account.id
    )
    await expect(page.locator("#public-key")).to_have_text(key.public_key)
    await page.fill("#url", "http://10.1.2.3/hook")
    await page.click("#add-webhook button[type=submit]")
    await expect(page.locator(".error")).to_contain_text("a private address")
    await page.fill("#url", "http://127.0.0.1:9/browser-hook")
    await page.click("#add-webhook button[type=submit]")
    await expect(page.locator(".flash")).to_contain_text("added")
    await page.screenshot(path=str(ARTIFACTS / "webhooks.png"), full_page=True)

    (hook,) = [
        h for h in await WebhookStore(store.db).of_account(world.a.account.id) if "browser" in h.url
    ]
    delivery = WebhookDelivery(
        event_id="evt_browser1",
        webhook_id=hook.id,
        account_id=world.a.account.id,
        fax_id="fax_partly",
        event_type="fax.failed",
        month="202611",
        body='{"id":"evt_browser1"}',
    )
    await WebhookStore(store.db).log(hook.id, "202611").insert_one(delivery.to_doc())
    await page.click('#webhooks a:has-text("browser-hook")')
    await expect(page.locator("#deliveries tbody tr")).to_have_count(1)
    async with EventTap(bus, ("webhook.delivery.requested",)) as tap:
        await page.click("#deliveries button[type=submit]")
        await expect(page.locator(".flash")).to_contain_text("Replaying evt_browser1")
        command = await tap.get(10)
    assert command.fax_id == "fax_partly"
    await page.screenshot(path=str(ARTIFACTS / "webhook-deliveries.png"), full_page=True)
    await context.close()
