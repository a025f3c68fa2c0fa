"""The whole pipeline, every service a real process: mail in, fax on the line, mail out.

User A (alice) emails documents to numbers at the account's realm: submitted to the mail
relay logged in as alice (so it carries the relay's proof of the sender, which the
faxbox requires by default), delivered into the intake mailbox the mail-poller watches.
Outbound calls go to pstn-sim, whose numbers +1 646 555 01xx are forwarded to our
inbound receiver (B's number is one of them). The notifier's mail lands in the test's
SMTP server. Line clock 20 times real time, T.38.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image
from pypdf import PdfReader

from faxbox.demo.document import demo_pdf
from faxbox.demo.tenant import Seeded
from faxbox.pstn_sim.pages import page_digests
from faxbox.shared.bus import Bus, EventTap
from faxbox.shared.contracts import (
    FaxAttemptFailed,
    FaxFailed,
    FaxSent,
    InboundFaxReceived,
    Message,
    NotificationKind,
    NotificationSent,
    OutboundFaxRejected,
    OutboundFaxRequested,
)
from faxbox.shared.settings import BrokerSettings
from faxbox.shared.store import Carrier, HistoryRecord, Store
from tests.e2e.stack import ALICE, BOB, REALM, CapturedMail, SmtpCapture, Stack, eventually
from tests.integration.sip._pages import save_fax_tiff, text_page
from tests.peers.sipp import reply, scenario, start_sipp
from tests.support import RabbitServer

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(240)]

UNASSIGNED = "+16465550199"


class Tap:
    """The bus events since the tap opened, collected in the background."""

    def __init__(self, tap: EventTap) -> None:
        self.tap = tap
        self.events: list[Message] = []

    async def drain(self) -> list[Message]:
        while True:
            try:
                self.events.append(await self.tap.get(0.05))
            except TimeoutError:
                return self.events

    async def first(self, contract: type[Any], timeout_s: float = 60, **fields: Any) -> Any:
        async def found() -> Any:
            for event in await self.drain():
                if isinstance(event, contract) and all(
                    getattr(event, k) == v for k, v in fields.items()
                ):
                    return event
            return None

        return await eventually(found, timeout_s, f"{contract.__name__} {fields}")


@pytest_asyncio.fixture(scope="module")
async def tap(stack: Stack) -> AsyncIterator[Tap]:
    bus = Bus(BrokerSettings(amqp_url=stack.amqp_url, exchange_prefix=stack.prefix))
    await bus.connect()
    async with EventTap(bus) as events:
        yield Tap(events)
    await bus.close()


def mail(
    to: str,
    attachments: list[tuple[str, str, bytes]],
    sender: str = ALICE.email,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "please fax"
    message["Message-ID"] = make_msgid(idstring=uuid.uuid4().hex[:8], domain="client.test")
    message.set_content("Hello, the attachment please.\n")
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message


def replies_to(smtp: SmtpCapture, original: EmailMessage) -> list[CapturedMail]:
    return [m for m in smtp.mails if m.header("In-Reply-To") == original["Message-ID"]]


async def history(store: Store, event: Message, status: str) -> HistoryRecord:
    assert hasattr(event, "account_id")
    assert hasattr(event, "month")

    async def record() -> HistoryRecord | None:
        doc = await store.history.collection(event.account_id, event.month).find_one(
            {"_id": event.fax_id}
        )
        found = HistoryRecord.model_validate(doc) if doc else None
        return found if found is not None and found.status == status else None

    found: HistoryRecord = await eventually(record, 30, f"history of {event.fax_id}: {status}")
    return found


def pages_of_tiff(data: bytes) -> list[np.ndarray[Any, Any]]:
    with Image.open(io.BytesIO(data)) as image:
        frames = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            frames.append(np.array(image.convert("L")) < 128)
    return frames


def pages_of_pdf(data: bytes) -> list[np.ndarray[Any, Any]]:
    pages = []
    for page in PdfReader(io.BytesIO(data)).pages:
        (embedded,) = page.images
        assert embedded.image is not None
        pages.append(np.array(embedded.image.convert("L")) < 128)
    return pages


async def test_a_to_b_three_pages(
    stack: Stack, tenant: Seeded, tap: Tap, smtp: SmtpCapture, store: Store
) -> None:
    original = mail(f"{BOB.number}@{REALM}", [("report.pdf", "application/pdf", demo_pdf(3))])
    stack.submit(original)

    requested: OutboundFaxRequested = await tap.first(
        OutboundFaxRequested, source_message_id=original["Message-ID"]
    )
    assert requested.pages == 3
    sent: FaxSent = await tap.first(FaxSent, 90, fax_id=requested.fax_id)
    assert sent.statistics.pages_transferred == 3

    # A: one "sent" mail, in the thread of their email.
    (reply,) = await eventually(lambda: replies_to(smtp, original), 30, "A's sent mail")
    assert reply.rcpt_tos == (ALICE.email,)
    assert reply.header("Subject") == f"Fax to {BOB.number} sent (3 pages)"
    assert reply.header("Auto-Submitted") == "auto-replied"

    # B: the fax as a PDF of 3 pages, the same images as the pages A's PDF was rendered to.
    def bobs_fax() -> list[CapturedMail]:
        return [m for m in smtp.to(BOB.email) if ALICE.number in m.header("Subject")]

    (received,) = await eventually(bobs_fax, 30, "B's fax mail")
    assert received.header("Subject") == f"Fax from {ALICE.number} (3 pages)"
    (pdf,) = [data for name, data in received.attachments().items() if name.endswith(".pdf")]
    got = pages_of_pdf(pdf)
    rendered = pages_of_tiff(await read_document(store, requested.fax_tiff))
    assert len(got) == len(rendered) == 3
    for page, want in zip(got, rendered, strict=True):
        # The transmitter stamps a header line on top of each page; compare what the
        # sender's document became, below it.
        header = page.shape[0] - want.shape[0]
        assert page.shape[1] == want.shape[1]
        assert 0 <= header <= 64
        same = float(np.mean(page[header:] == want))
        assert same > 0.999, f"only {same:.4%} of the pixels match"

    # Both histories, and exactly one call on the line.
    outbound = await history(store, sent, "sent")
    assert outbound.pages == 3
    assert outbound.attempts == 1
    inbound_event = await tap.first(InboundFaxReceived, 30, called_number=BOB.number)
    inbound = await history(store, inbound_event, "received")
    assert inbound.direction == "inbound"
    assert inbound.pages == 3
    calls = stack.calls(to=BOB.number)
    assert len(calls) == 1, calls


async def one_fax_per_number(
    stack: Stack,
    tap: Tap,
    smtp: SmtpCapture,
    store: Store,
    original: EmailMessage,
    numbers: set[str],
) -> list[OutboundFaxRequested]:
    """Each of ``numbers`` faxed: one call each, one sent mail each in the thread of
    the user's email, one history document each. The fax requests."""
    requests: list[OutboundFaxRequested] = []

    async def both_requested() -> bool:
        for event in await tap.drain():
            if (
                isinstance(event, OutboundFaxRequested)
                and event.source_message_id == original["Message-ID"]
                and event not in requests
            ):
                requests.append(event)
        return len(requests) >= 2

    await eventually(both_requested, 60, "a fax request for each number")
    assert {r.destination for r in requests} == numbers
    assert len({r.fax_id for r in requests}) == 2
    sent = [await tap.first(FaxSent, 90, fax_id=r.fax_id) for r in requests]

    mails = await eventually(
        lambda: (found := replies_to(smtp, original)) and len(found) >= 2 and found,
        30,
        "a sent mail for each fax",
    )
    assert sorted(m.header("Subject") for m in mails) == sorted(
        f"Fax to {n} sent (1 page)" for n in numbers
    )
    for event in sent:
        record = await history(store, event, "sent")
        assert record.remote_number == event.destination
        assert record.source_message_id == original["Message-ID"]
    for number in numbers:
        calls = stack.calls(to=number)
        assert len(calls) == 1, calls
    await asyncio.sleep(2)  # a second fax or mail for either number would show up by now
    assert len(replies_to(smtp, original)) == 2
    assert all(len(stack.calls(to=n)) == 1 for n in numbers)
    return requests


async def test_one_mail_to_two_numbers_through_the_relay(
    stack: Stack, tenant: Seeded, tap: Tap, smtp: SmtpCapture, store: Store
) -> None:
    """The MTA delivers one copy per envelope recipient, each naming it in X-Original-To."""
    numbers = ("+12125550247", "+12125550248")  # pstn-sim: fax machines that receive
    to = [f"{numbers[0]}@{REALM}", f"{numbers[1].removeprefix('+')}@{REALM}"]
    original = mail(", ".join(to), [("one.pdf", "application/pdf", demo_pdf(1))])

    await asyncio.to_thread(stack.submit, original, None, to)
    requests = await one_fax_per_number(stack, tap, smtp, store, original, set(numbers))
    # Two copies, two mails taken in: each its own fax id, neither derived from the other.
    first, second = sorted(requests, key=lambda e: e.fax_id)
    assert not second.fax_id.startswith(first.fax_id)


async def test_one_copy_for_two_numbers(
    stack: Stack, tenant: Seeded, tap: Tap, smtp: SmtpCapture, store: Store
) -> None:
    """A mailbox fed a single copy for all (as IMAP catch-alls at Gmail or Microsoft 365
    deliver): both numbers from To, one rendering for both faxes."""
    numbers = ("+12125550347", "+12125550348")
    to = f"{numbers[0]}@{REALM}, Carol <carol@example.com>, {numbers[1]}@{REALM}"
    original = mail(to, [("one.pdf", "application/pdf", demo_pdf(1))])
    # Put straight into the mailbox, as such a catch-all delivers it, with the proof its
    # MTA writes on top (here: what our relay writes for a logged-in alice).
    assert stack.relay is not None
    proof = f"Authentication-Results: {stack.relay.authserv_id}; auth=pass smtp.auth={ALICE.email}"
    stack.mailbox.append(f"{proof}\r\n".encode() + original.as_bytes())
    requests = await one_fax_per_number(stack, tap, smtp, store, original, set(numbers))
    first, second = sorted(requests, key=lambda e: e.fax_id)
    assert second.fax_id == f"{first.fax_id}-2"
    assert first.fax_tiff == second.fax_tiff  # rendered and stored once


async def test_mail_sent_without_logging_in_is_refused_and_the_owner_told(
    stack: Stack, tenant: Seeded, tap: Tap, smtp: SmtpCapture
) -> None:
    """Anyone can put alice's address in From; without her login (or DMARC, DKIM, SPF)
    nothing proves it was her, whatever proof the mail itself claims."""
    number = "+12125550249"
    original = mail(f"{number}@{REALM}", [("one.pdf", "application/pdf", demo_pdf(1))])
    assert stack.relay is not None
    original["Authentication-Results"] = (
        f"{stack.relay.authserv_id}; auth=pass smtp.auth={ALICE.email}"  # forged
    )
    await asyncio.to_thread(stack.relay.send_unauthenticated, original, ALICE.email)
    rejected: OutboundFaxRejected = await tap.first(
        OutboundFaxRejected, source_message_id=original["Message-ID"]
    )
    assert [r.code.value for r in rejected.reasons] == ["sender_not_authenticated"]
    assert "no Authentication-Results" in rejected.reasons[0].message
    (notice,) = await eventually(lambda: replies_to(smtp, original), 30, "the owner's notice")
    assert notice.rcpt_tos == (ALICE.email,)  # the faxbox owner's own address
    assert "someone tried to fax in your name" in notice.text()
    assert not stack.calls(to=number)


async def read_document(store: Store, ref: Any) -> bytes:
    return await store.documents.get(ref)


async def test_busy_then_success_on_the_retry(
    stack: Stack, tenant: Seeded, tap: Tap, smtp: SmtpCapture, store: Store
) -> None:
    number = "+12125550181"  # pstn-sim: busy to the first call, then a fax machine
    original = mail(f"{number}@{REALM}", [("one.pdf", "application/pdf", demo_pdf(1))])
    stack.submit(original)
    requested = await tap.first(OutboundFaxRequested, source_message_id=original["Message-ID"])
    sent: FaxSent = await tap.first(FaxSent, 90, fax_id=requested.fax_id)
    assert sent.attempts == 2
    (reply,) = await eventually(lambda: replies_to(smtp, original), 30, "A's sent mail")
    assert "sent" in reply.header("Subject")
    statuses = [c["sip_status"] for c in stack.calls(to=number)]
    assert sorted(statuses, key=str) == sorted([486, 200], key=str), statuses
    assert (await history(store, sent, "sent")).attempts == 2


async def test_a_call_cut_during_page_three_is_resumed_and_told_as_two_calls(
    stack: Stack, tenant: Seeded, tap: Tap, smtp: SmtpCapture, store: Store, tmp_path: Path
) -> None:
    # pstn-sim: the first call is dropped during page 3, the redial gets through.
    number = "+12125550194"
    original = mail(f"{number}@{REALM}", [("five.pdf", "application/pdf", demo_pdf(5))])
    stack.submit(original)
    requested = await tap.first(OutboundFaxRequested, source_message_id=original["Message-ID"])
    sent: FaxSent = await tap.first(FaxSent, 150, fax_id=requested.fax_id)
    assert (sent.attempts, sent.calls, sent.statistics.pages_transferred) == (2, 2, 5)
    document = tmp_path / "fax.tif"
    document.write_bytes(await read_document(store, requested.fax_tiff))
    pages = page_digests(document, below_header=False)
    cut, redial = sorted(stack.calls(to=number), key=lambda c: c["started_at"])
    # The redial carried pages 3-5 only: the far end holds each page once.
    assert cut["page_digests"] == pages[:2]
    assert redial["page_digests"] == pages[2:]
    (reply,) = await eventually(lambda: replies_to(smtp, original), 30, "A's sent mail")
    assert "Calls:              2 (each redial sent only the pages" in reply.text()
    assert (await history(store, sent, "sent")).calls == 2


async def test_no_answer_until_final_failure(
    stack: Stack, tenant: Seeded, tap: Tap, smtp: SmtpCapture
) -> None:
    number = "+12125550121"  # pstn-sim: rings, nobody answers
    original = mail(f"{number}@{REALM}", [("one.pdf", "application/pdf", demo_pdf(1))])
    stack.submit(original)
    requested = await tap.first(OutboundFaxRequested, source_message_id=original["Message-ID"])
    failed = await tap.first(FaxFailed, 120, fax_id=requested.fax_id)
    assert failed.attempts == 3
    (reply,) = await eventually(lambda: replies_to(smtp, original), 30, "A's failure mail")
    assert reply.header("Subject") == f"Fax to {number} failed"
    assert len(stack.calls(to=number)) == 3
    # Exactly one failure mail, however often the events were seen.
    await tap.first(NotificationSent, 30, fax_id=requested.fax_id, kind=NotificationKind.failed)
    assert len(replies_to(smtp, original)) == 1


async def test_rejections_are_explained_and_an_unknown_sender_gets_nothing(
    stack: Stack, tenant: Seeded, tap: Tap, smtp: SmtpCapture, rabbit: RabbitServer
) -> None:
    pdf = demo_pdf(1)
    cases = {
        "number": mail(f"12345@{REALM}", [("a.pdf", "application/pdf", pdf)]),
        "attachment": mail(f"{BOB.number}@{REALM}", []),
        "two": mail(
            f"{BOB.number}@{REALM}",
            [("a.pdf", "application/pdf", pdf), ("b.pdf", "application/pdf", pdf)],
        ),
    }
    stranger = mail(
        f"{BOB.number}@{REALM}", [("a.pdf", "application/pdf", pdf)], sender="eve@elsewhere.test"
    )
    for message in (*cases.values(), stranger):
        # The stranger cannot log in as eve@elsewhere.test; logged in as alice, the
        # proof names alice, and eve is still nobody this realm knows.
        stack.submit(message, login=ALICE.email)

    for case, original in cases.items():
        rejected: OutboundFaxRejected = await tap.first(
            OutboundFaxRejected, source_message_id=original["Message-ID"]
        )
        (reply,) = await eventually(
            lambda o=original: replies_to(smtp, o),  # type: ignore[misc]
            30,
            f"the rejection mail ({case})",
        )
        assert reply.rcpt_tos == (ALICE.email,)
        assert reply.header("Subject").startswith("Your fax to ")
        text = reply.text()
        for reason in rejected.reasons:
            assert reason.message in text
        # Every rejection says how a correct address looks.
        assert f"@{REALM}" in text

    # The stranger's mail is dead-lettered with its reason, and nobody is mailed about it.
    def dead_letters() -> int:
        queue = f"{stack.prefix}.validator.dlq"
        vhost = stack.amqp_url.rsplit("/", 1)[1]
        info: Any = rabbit.api("GET", f"/api/queues/{vhost}/{queue}")
        return int(info.get("messages", 0))

    await eventually(lambda: dead_letters() >= 1, 30, "the unknown sender in the dead letters")
    assert not smtp.to("eve@elsewhere.test")
    assert not replies_to(smtp, stranger)


@pytest.fixture(scope="module")
def inbound_document(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inbound") / "three.tif"
    return save_fax_tiff(path, [text_page(n) for n in (1, 2, 3)])


async def test_inbound_to_an_assigned_number(
    stack: Stack, tenant: Seeded, smtp: SmtpCapture, inbound_document: Path
) -> None:
    caller = "+12125550100"
    stack.pstn(
        "/originate",
        {"from": caller, "to": BOB.number, "document": str(inbound_document), "media": "t38"},
    )

    def fax_mail() -> list[CapturedMail]:
        return [
            m for m in smtp.to(BOB.email) if m.header("Subject").startswith(f"Fax from {caller}")
        ]

    (received,) = await eventually(fax_mail, 60, "B's mail with the fax")
    assert received.header("Subject") == f"Fax from {caller} (3 pages)"
    (pdf,) = [d for n, d in received.attachments().items() if n.endswith(".pdf")]
    assert len(PdfReader(io.BytesIO(pdf)).pages) == 3


async def test_inbound_to_an_unassigned_number_is_refused(
    stack: Stack, tenant: Seeded, smtp: SmtpCapture, inbound_document: Path
) -> None:
    before = len(smtp.mails)
    stack.pstn(
        "/originate",
        {"from": "+12125550103", "to": UNASSIGNED, "document": str(inbound_document)},
    )

    def ended() -> list[dict[str, Any]]:
        return [c for c in stack.calls(to=UNASSIGNED) if c["ended_at"]]

    (call,) = await eventually(ended, 30, "the call to the unassigned number to end")
    assert call["sip_status"] == 404
    assert len(smtp.mails) == before


async def test_a_partial_inbound_fax_keeps_its_pages(
    stack: Stack, tenant: Seeded, smtp: SmtpCapture, inbound_document: Path
) -> None:
    caller = "+12125550104"
    stack.pstn(
        "/originate",
        {
            "from": caller,
            "to": BOB.number,
            "document": str(inbound_document),
            "media": "t38",
            "drop_on_page": 3,
        },
    )

    def failure_mail() -> list[CapturedMail]:
        return [m for m in smtp.to(BOB.email) if caller in m.header("Subject")]

    (failed,) = await eventually(failure_mail, 90, "B's mail about the partial fax")
    assert failed.header("Subject") == f"Fax from {caller} could not be received"
    (pdf,) = [d for n, d in failed.attachments().items() if n.endswith(".pdf")]
    assert len(PdfReader(io.BytesIO(pdf)).pages) == 2


async def test_route_flags_open_a_carrier_and_a_503_fails_over_to_the_next(
    stack: Stack, tenant: Seeded, tap: Tap, store: Store, tmp_path: Path
) -> None:
    """The faxbox's route flag reaches the transmitter through the validator: the fax may
    use the carrier that requires the flag (tried first, by priority). That carrier (SIPp)
    answers 503 with Retry-After; the call goes to pstn-sim in the same attempt, and the
    history's timeline shows both carriers."""
    sipp = await start_sipp(
        tmp_path,
        scenario(
            "a carrier in trouble",
            '<recv request="INVITE"/>'
            + reply("503 Service Unavailable", extra="Retry-After: 30")
            + '<recv request="ACK"/>',
        ),
    )
    premium = await store.add_carrier(
        Carrier(
            name="e2e-premium-503",
            flags=["fax"],
            require_flags=["premium"],
            priority=1,
            channel_cap=2,
            sip_host="127.0.0.1",
            sip_port=sipp.port,
        )
    )
    alice = tenant.faxboxes[ALICE.email]
    await store.update_faxbox(alice.id, route_flags=["premium"])
    try:
        number = "+12125550105"  # pstn-sim receives
        original = mail(f"{number}@{REALM}", [("one.pdf", "application/pdf", demo_pdf(1))])
        stack.submit(original)
        requested: OutboundFaxRequested = await tap.first(
            OutboundFaxRequested, source_message_id=original["Message-ID"]
        )
        assert requested.route_flags == ("premium",)
        sent: FaxSent = await tap.first(FaxSent, 90, fax_id=requested.fax_id)
        assert (sent.carrier_id, sent.attempts) == (tenant.carrier.id, 1)
        failed_over: FaxAttemptFailed = await tap.first(
            FaxAttemptFailed, 10, fax_id=requested.fax_id
        )
        assert failed_over.carrier_failover
        assert (failed_over.carrier_id, failed_over.failure.sip_status) == (premium.id, 503)
        await sipp.assert_passed()
        record = await history(store, sent, "sent")
        summaries = [entry.summary for entry in record.timeline]
        assert any(f"failed on carrier {premium.id}" in s for s in summaries), summaries
        assert any(s.startswith("sent: 1 of 1") for s in summaries), summaries
    finally:
        await store.update_faxbox(alice.id, route_flags=[])
        await store.remove_carrier(premium.id)
