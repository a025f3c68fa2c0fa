"""Sending through the API, end to end: every service a real process (portal and webhooks
included), real calls through pstn-sim, a real HTTP webhook receiver in this process and
the notifier's mail in the test's SMTP capture.

- API send → validator → a real call → ``fax.queued``/``fax.sending``/``fax.delivered``
  webhooks, signed with the account's key, and the sent mail with its page report;
- the per-page report equals what pstn-sim's receiving machine recorded, page by page;
- the header line on the received page 2 is ours and says ``page 2/3``;
- the same request again with its Idempotency-Key is the same fax, not a second call;
- a fax dropped on page 2 every time ends partly sent (``fax.failed``,
  ``partially_delivered``, one page confirmed);
- a fax cancelled while on the line is hung up, ends ``cancelled``, no failed mail.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from faxbox.demo.document import demo_pdf
from faxbox.demo.tenant import Seeded
from faxbox.portal.security import TokenScope, TokenStore
from faxbox.render import strip_rows
from faxbox.render.header import strip_bits
from faxbox.shared.secretbox import SecretBox
from faxbox.shared.store import Faxbox, Store
from faxbox.shared.store.signing_keys import SigningKeys
from faxbox.shared.store.webhooks import Webhook, WebhookStore
from faxbox.shared.tagline import DEFAULT_HEADER_FORMAT, HeaderFields, header_text
from tests.e2e.stack import ALICE, SECRET_KEY, WITH_PORTAL, SmtpCapture, Stack, eventually
from tests.webhook_receiver import Received, WebhookReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

RECEIVES = "+12125550199"  # pstn-sim's default row: a fax machine that receives
DROPS_ON_PAGE_2 = "+12125550141"


@pytest.fixture(scope="module")
def stack_services() -> tuple[str, ...]:
    return WITH_PORTAL


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver().running() as running:
        yield running


@pytest.fixture(scope="module")
async def api(
    stack: Stack, tenant: Seeded, store: Store, receiver: WebhookReceiver
) -> AsyncIterator[httpx.AsyncClient]:
    alice = tenant.users[ALICE.email]
    tokens = TokenStore(store.db)
    _, secret = await tokens.create(alice, "e2e", TokenScope.SEND)
    await WebhookStore(store.db).add(
        Webhook(account_id=tenant.account.id, url=receiver.url("/faxbox"))
    )
    async with httpx.AsyncClient(
        base_url=stack.portal_url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    ) as client:
        yield client


async def public_key(store: Store, tenant: Seeded) -> str:
    """The key the portal shows the account's admins (the same document it reads)."""
    return (await SigningKeys(store.db, SecretBox(SECRET_KEY)).public(tenant.account.id)).public_key


def header_of_page_2(
    drawn: np.ndarray[Any, Any], faxbox: Faxbox, around: datetime
) -> tuple[str, ...]:
    """The header line the strip shows, among those of the minutes around ``around``."""
    for minute in (-1, 0, 1):
        fields = HeaderFields(
            moment=around + timedelta(minutes=minute),
            timezone=faxbox.timezone,
            sender_name=faxbox.header_name,
            our_number=faxbox.caller_id or "",
        )
        line = header_text(DEFAULT_HEADER_FORMAT, fields, 2, 3)
        if np.array_equal(drawn, strip_bits(line)):
            return line
    raise AssertionError("page 2's header strip is none of ours")


def events_of(receiver: WebhookReceiver, fax_id: str) -> list[Received]:
    return [r for r in receiver.to("/faxbox") if r.event["fax_id"] == fax_id]


async def send(
    api: httpx.AsyncClient, number: str, document: bytes, **headers: str
) -> httpx.Response:
    return await api.post(
        "/api/v1/faxes",
        files={"file": ("letter.pdf", document, "application/pdf")},
        data={"to": [number]},
        headers=headers,
    )


async def test_an_api_fax_goes_through_a_real_call_and_is_told_by_webhook_and_mail(
    stack: Stack,
    tenant: Seeded,
    store: Store,
    api: httpx.AsyncClient,
    receiver: WebhookReceiver,
    smtp: SmtpCapture,
) -> None:
    letter = demo_pdf(3, "API fax")  # it holds the time it was made: one copy, sent twice
    created = await send(api, RECEIVES, letter, **{"Idempotency-Key": "e2e-order-1"})
    assert created.status_code == 202, created.text
    (fax,) = created.json()["faxes"]
    fax_id = fax["id"]

    def delivered() -> list[Received]:
        told = events_of(receiver, fax_id)
        return told if any(r.event["type"] == "fax.delivered" for r in told) else []

    told = await eventually(delivered, 120, "the fax.delivered webhook")
    key = await public_key(store, tenant)
    assert all(r.verify(key) for r in told)
    types = [r.event["type"] for r in told]
    assert types.index("fax.queued") < types.index("fax.sending") < types.index("fax.delivered")
    assert len({r.event["id"] for r in told}) == len(told)  # every event its own id
    done = next(r.event for r in told if r.event["type"] == "fax.delivered")
    assert done["data"]["status"] == "delivered"
    assert (done["data"]["pages_sent"], done["data"]["pages_total"]) == (3, 3)

    # The API says the same, with the page report.
    state = (await api.get(f"/api/v1/faxes/{fax_id}")).json()
    assert state["status"] in ("delivered", "sending")  # the history may lag the event
    state = await eventually(
        lambda: _status(api, fax_id, "delivered"), 30, "GET /api/v1/faxes/{id} delivered"
    )
    report = state["page_report"]
    assert [p["page"] for p in report] == [1, 2, 3]
    assert all(p["confirmed"] for p in report)

    # The same request with the same key is the same fax: no second call.
    again = await send(api, RECEIVES, letter, **{"Idempotency-Key": "e2e-order-1"})
    assert again.json() == created.json()
    assert again.headers.get("Idempotent-Replayed") == "true"

    # pstn-sim's receiving machine recorded the same pages as our report.
    (call,) = [c for c in stack.calls(RECEIVES) if c["outcome"] and c["outcome"]["success"]]
    theirs = call["outcome"]["page_report"]
    shared = ("page", "bit_rate", "ecm", "x_resolution", "y_resolution", "encoding", "confirmed")
    assert [{k: p[k] for k in shared} for p in report] == [
        {k: p[k] for k in shared} for p in theirs
    ]
    assert [p["result"] for p in theirs] == ["MPS", "MPS", "EOP"]

    # Page 2 as the far end printed it: our header line, saying page 2/3.
    tiff = await _received_tiff(stack, call["id"])
    with Image.open(io.BytesIO(tiff)) as image:
        image.seek(1)
        page_2 = np.asarray(image.convert("L"))
    rows = strip_rows(196)
    drawn = np.packbits(page_2[:rows] < 128, axis=1)
    faxbox = tenant.faxboxes[ALICE.email]
    started = datetime.fromisoformat(
        next(r.event for r in told if r.event["type"] == "fax.sending")["created_at"]
    )
    line = header_of_page_2(drawn, faxbox, started)
    assert line[-1] == "page 2/3"
    assert line[0] == f"{faxbox.header_name}  {faxbox.caller_id}"

    # The sent mail, with its page report and page 1 as transmitted.
    def sent_mail() -> Any:
        return [m for m in smtp.to(ALICE.email) if "sent (3 pages)" in m.header("Subject")]

    (mail,) = await eventually(sent_mail, 60, "the sent mail")
    assert "Page by page" in mail.text()
    assert sum(1 for line in mail.text().splitlines() if line[:1].isdigit()) == 3


async def _status(api: httpx.AsyncClient, fax_id: str, status: str) -> dict[str, Any] | None:
    state: dict[str, Any] = (await api.get(f"/api/v1/faxes/{fax_id}")).json()
    return state if state["status"] == status else None


async def _received_tiff(stack: Stack, call_id: str) -> bytes:
    async with httpx.AsyncClient(base_url=stack.pstn_url, timeout=30) as client:
        response = await client.get(f"/calls/{call_id}/tiff")
    assert response.status_code == 200
    return response.content


async def test_a_fax_dropped_on_page_2_every_time_ends_partly_delivered(
    api: httpx.AsyncClient, receiver: WebhookReceiver, smtp: SmtpCapture
) -> None:
    # Each call is dropped during its own second page and each redial resumes after the
    # pages confirmed: the three attempts deliver pages 1, 2 and 3 of 5.
    created = await send(api, DROPS_ON_PAGE_2, demo_pdf(5, "Dropped"))
    fax_id = created.json()["faxes"][0]["id"]

    def failed() -> list[Received]:
        return [r for r in events_of(receiver, fax_id) if r.event["type"] == "fax.failed"]

    (told,) = await eventually(failed, 180, "the fax.failed webhook")
    data = told.event["data"]
    assert data["status"] == "partially_delivered"
    assert (data["pages_sent"], data["pages_total"]) == (3, 5)
    assert data["failure_reason"] == "call_dropped"
    assert data["retryable"] is True
    assert [(p["page"], p["confirmed"]) for p in data["page_report"]] == [(3, True)]

    def partly() -> Any:
        return [
            m for m in smtp.to(ALICE.email) if "partly sent (3 of 5 pages)" in m.header("Subject")
        ]

    await eventually(partly, 60, "the partly sent mail")


async def test_a_fax_cancelled_on_the_line_is_hung_up_and_ends_cancelled(
    stack: Stack, api: httpx.AsyncClient, receiver: WebhookReceiver, smtp: SmtpCapture
) -> None:
    number = "+12125550198"
    created = await send(api, number, demo_pdf(20, "Long"))
    fax_id = created.json()["faxes"][0]["id"]

    def on_the_line() -> bool:
        return any(c.get("answered_at") and not c.get("ended_at") for c in stack.calls(number))

    await eventually(on_the_line, 120, "the call to be answered", interval_s=0.05)
    await asyncio.sleep(1.0)  # a few pages of call time at the stack's pace
    cancelled = await api.post(f"/api/v1/faxes/{fax_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "sending"

    def failed() -> list[Received]:
        return [r for r in events_of(receiver, fax_id) if r.event["type"] == "fax.failed"]

    (told,) = await eventually(failed, 60, "the fax.failed webhook")
    data = told.event["data"]
    assert data["status"] == "cancelled"
    assert data["failure_reason"] == "cancelled"
    assert data["pages_sent"] < 20
    (call,) = await eventually(
        lambda: [c for c in stack.calls(number) if c.get("ended_at")], 30, "the call's end"
    )
    assert call["pages_received"] == data["pages_sent"]
    assert call["pages_received"] < 20
    # Too late to cancel again; and nobody is mailed about a cancel they asked for.
    again = await api.post(f"/api/v1/faxes/{fax_id}/cancel")
    assert again.status_code == 409
    await asyncio.sleep(2)
    assert not [m for m in smtp.to(ALICE.email) if number in m.header("Subject")]
