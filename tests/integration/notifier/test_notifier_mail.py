"""The notifier against a real SMTP server (aiosmtpd, in the test), RabbitMQ and FerretDB."""

from __future__ import annotations

import asyncio
import email
import io
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from PIL import Image, ImageDraw

from faxbox.notifier.service import Settings, service
from faxbox.shared.bus import ERROR_KIND_HEADER, REASON_HEADER, Bus
from faxbox.shared.contracts import (
    DocumentRef,
    FailureClass,
    FaxFailed,
    FaxFailure,
    FaxSent,
    InboundFaxFailed,
    InboundFaxReceived,
    NotificationSent,
    OutboundFaxRejected,
    RejectionCode,
    RejectionReason,
    TransferStatistics,
)
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Account, Faxbox, Store, User
from tests.support import free_port

pytestmark = pytest.mark.integration

MONTH = "202611"
AT = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)  # 10:30:00 in Berlin


# --- a real SMTP server ----------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class SmtpRecorder:
    """aiosmtpd handler: keeps every mail; answers DATA from a script first, then 250."""

    received: list[Received] = field(default_factory=list)
    script: list[str] = field(default_factory=list)
    data_commands: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.data_commands += 1
            if self.script:
                return self.script.pop(0)
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpRecorder, int]]:
    recorder = SmtpRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()


async def wait_for_mails(recorder: SmtpRecorder, count: int, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while len(recorder.received) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(recorder.received)} mails arrived, expected {count}")
        await asyncio.sleep(0.05)


# --- the account, its people and documents ---------------------------------------------------


@dataclass
class World:
    account: Account
    user: User
    faxbox: Faxbox
    quiet_faxbox: Faxbox
    tiff: DocumentRef
    pdf: DocumentRef
    raw_mail: DocumentRef


def fax_tiff() -> bytes:
    page = Image.new("1", (1728, 2200), 1)
    draw = ImageDraw.Draw(page)
    draw.text((20, 10), "2026-11-10 10:30  From ACME  +14155550100  Page 1/3", fill=0)
    draw.rectangle((200, 400, 1500, 900), fill=0)
    out = io.BytesIO()
    page.save(out, format="TIFF", compression="group4", dpi=(204, 196))
    return out.getvalue()


RAW_MAIL = (
    b"From: alice@example.com\r\nTo: 555-0123@acme.faxbox.test\r\n"
    b"Message-ID: <orig@example.com>\r\nSubject: fax\r\n\r\nhello\r\n"
)


@pytest.fixture(scope="module")
async def world(store: Store) -> World:
    tag = uuid.uuid4().hex[:6]
    account = await store.create_account(
        Account(id=f"acc{tag}", name="ACME", realm=f"acme{tag}.faxbox.test")
    )
    user = await store.create_user(
        User(
            account_id=account.id,
            email=f"alice{tag}@example.com",
            alternate_email=f"fax-desk{tag}@example.com",
        )
    )
    faxbox = await store.create_faxbox(
        Faxbox(
            account_id=account.id,
            owner_user_id=user.id,
            timezone="Europe/Berlin",
            extra_recipients=[f"boss{tag}@example.com"],
        )
    )
    quiet_user = await store.create_user(User(account_id=account.id, email=f"q{tag}@example.com"))
    quiet = await store.create_faxbox(
        Faxbox(account_id=account.id, owner_user_id=quiet_user.id, success_notifications=False)
    )
    docs = store.documents
    return World(
        account=account,
        user=user,
        faxbox=faxbox,
        quiet_faxbox=quiet,
        tiff=await docs.put(
            account.id, MONTH, fax_tiff(), filename="t.tif", content_type="image/tiff"
        ),
        pdf=await docs.put(
            account.id,
            MONTH,
            b"%PDF-1.4 received fax",
            filename="r.pdf",
            content_type="application/pdf",
        ),
        raw_mail=await docs.put(
            "intake", MONTH, RAW_MAIL, filename="m.eml", content_type="message/rfc822"
        ),
    )


# --- events ------------------------------------------------------------------------------


def common(world: World) -> dict[str, Any]:
    return {
        "fax_id": f"fax_{uuid.uuid4().hex[:12]}",
        "account_id": world.account.id,
        "month": MONTH,
    }


def stats() -> TransferStatistics:
    return TransferStatistics(
        pages_transferred=3,
        pages_total=3,
        bit_rate=14400,
        ecm=True,
        x_resolution=8031,
        y_resolution=7700,
        remote_station_id="ACME FAX 1",
        duration_s=83.4,
    )


def sent(world: World, faxbox: Faxbox | None = None) -> FaxSent:
    box = faxbox or world.faxbox
    return FaxSent(
        **common(world),
        occurred_at=AT,
        user_id=box.owner_user_id,
        faxbox_id=box.id,
        destination="+14155550123",
        attempts=2,
        carrier_id="car_1",
        statistics=stats(),
        transmitted_tiff=world.tiff,
        source_message_id="<orig@example.com>",
    )


def failed(world: World) -> FaxFailed:
    return FaxFailed(
        **common(world),
        occurred_at=AT,
        user_id=world.user.id,
        faxbox_id=world.faxbox.id,
        destination="+14155550123",
        attempts=3,
        failure=FaxFailure(failure_class=FailureClass.line, code=2, text="T0 expired"),
        pages_sent=0,
        pages_total=3,
        source_message_id="<orig@example.com>",
    )


def rejected(world: World, raw: DocumentRef | None = None) -> OutboundFaxRejected:
    return OutboundFaxRejected(
        **common(world),
        occurred_at=AT,
        user_id=world.user.id,
        faxbox_id=world.faxbox.id,
        sender_email=world.user.email,
        destination_raw="555-0123",
        reasons=(
            RejectionReason(code=RejectionCode.invalid_number, message="555-0123 is too short."),
            RejectionReason(code=RejectionCode.no_attachment, message="No document was attached."),
        ),
        source_message_id="<orig@example.com>",
        raw=raw or world.raw_mail,
    )


def received(world: World) -> InboundFaxReceived:
    return InboundFaxReceived(
        **common(world),
        occurred_at=AT,
        faxbox_id=world.faxbox.id,
        user_id=world.user.id,
        caller_number="+442079460958",
        called_number="+14155550100",
        statistics=stats(),
        tiff=world.tiff,
        pdf=world.pdf,
    )


def inbound_failed(world: World) -> InboundFaxFailed:
    return InboundFaxFailed(
        **common(world),
        occurred_at=AT,
        faxbox_id=world.faxbox.id,
        user_id=world.user.id,
        caller_number="+442079460958",
        called_number="+14155550100",
        failure=FaxFailure(failure_class=FailureClass.protocol, code=38, text="RX_DCNPHD"),
        pages_received=1,
        partial_pdf=world.pdf,
    )


# --- the running notifier ------------------------------------------------------------------


@dataclass
class Running:
    bus: Bus
    recorder: SmtpRecorder
    settings: Settings


@pytest.fixture
async def notifier(
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    smtp: tuple[SmtpRecorder, int],
    world: World,
) -> AsyncIterator[Running]:
    recorder, port = smtp
    settings = Settings(
        **broker_settings.model_dump(),
        **mongo_settings.model_dump(),
        notifier_smtp_host="127.0.0.1",
        notifier_smtp_port=port,
        notifier_smtp_security="none",
        notifier_message_id_domain="faxbox.test",
        notifier_mail_from="Faxbox <fax@faxbox.test>",
    )
    bus = Bus(settings)
    await bus.connect()
    await bus.declare_service("history")  # the consumer of NotificationSent
    try:
        async with service(Runtime("notifier"), settings):
            yield Running(bus, recorder, settings)
    finally:
        await bus.close()


async def next_in(
    bus: Bus, queue_name: str, within_s: float = 20, type_name: str | None = None
) -> Any:
    """The next message on the queue (of that type: others are skipped)."""
    channel = await bus.connection.channel()
    try:
        queue = await channel.get_queue(queue_name)
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            incoming = await queue.get(no_ack=True, fail=False)
            if incoming is not None and type_name in (None, incoming.type):
                return incoming
            if incoming is not None:
                continue
            await asyncio.sleep(0.05)
    finally:
        await channel.close()
    raise AssertionError(f"nothing arrived on {queue_name}")


async def next_note(bus: Bus) -> NotificationSent:
    queue = bus.topology.queue("history")
    incoming = await next_in(bus, queue, type_name="NotificationSent")
    return NotificationSent.model_validate_json(incoming.body)


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def everyone(world: World) -> list[str]:
    assert world.user.alternate_email is not None
    return sorted([world.user.alternate_email, *world.faxbox.extra_recipients])


def assert_automatic_reply_headers(message: EmailMessage) -> None:
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["Message-ID"].endswith("@faxbox.test>")
    assert message["From"] == "Faxbox <fax@faxbox.test>"


# --- the mails -----------------------------------------------------------------------------


async def test_sent_mail(notifier: Running, world: World) -> None:
    event = sent(world)
    await notifier.bus.publish(event)
    await wait_for_mails(notifier.recorder, 1)
    (mail,) = notifier.recorder.received
    m = mail.message
    assert sorted(mail.rcpt_tos) == everyone(world)
    assert_automatic_reply_headers(m)
    assert m["In-Reply-To"] == "<orig@example.com>"
    assert m["References"] == "<orig@example.com>"
    assert "+14155550123" in m["Subject"]
    text = text_of(m)
    for expected in (
        "+14155550123",
        "3 of 3",
        "1 min 23 s",
        "ACME FAX 1",
        "2026-11-10 10:30:00 CET",
    ):
        assert expected in text
    html = html_of(m)
    assert 'src="cid:page1@faxbox"' in html
    images = [p for p in m.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 1
    assert images[0]["Content-ID"] == "<page1@faxbox>"
    png = Image.open(io.BytesIO(images[0].get_content()))
    assert png.width == 300
    assert 300 < png.height < 500  # the page's real proportions, not 1728x2200 squashed

    note = await next_note(notifier.bus)
    assert (note.fax_id, note.kind.value) == (event.fax_id, "sent")
    assert note.smtp_message_id == m["Message-ID"]
    assert set(note.recipients) == set(mail.rcpt_tos)


async def test_failed_mail(notifier: Running, world: World) -> None:
    await notifier.bus.publish(failed(world))
    await wait_for_mails(notifier.recorder, 1)
    m = notifier.recorder.received[0].message
    assert_automatic_reply_headers(m)
    assert m["In-Reply-To"] == "<orig@example.com>"
    text = text_of(m)
    assert "No fax machine answered the call." in text  # code 2 in plain words
    assert "T.30 code:    2 (T30_ERR_T0_EXPIRED)" in text
    assert "Attempts:     3" in text
    assert "Pages sent:   0 of 3" in text
    assert "What to try: Check that the number is a fax number" in text
    assert "T30_ERR_T0_EXPIRED" in html_of(m)


async def test_rejected_mail_lists_every_reason_with_a_fix_and_an_example(
    notifier: Running, world: World
) -> None:
    await notifier.bus.publish(rejected(world))
    await wait_for_mails(notifier.recorder, 1)
    m = notifier.recorder.received[0].message
    assert_automatic_reply_headers(m)
    assert m["In-Reply-To"] == "<orig@example.com>"
    text = text_of(m)
    assert "555-0123 is too short." in text
    assert "No document was attached." in text
    assert "Attach the document to fax as a PDF or TIFF file." in text
    assert f"+14155550123@{world.account.realm}" in text
    assert "&lt;" not in text
    assert f"+14155550123@{world.account.realm}" in html_of(m)


async def test_received_mail_has_the_pdf_named_after_caller_and_local_time(
    notifier: Running, world: World
) -> None:
    await notifier.bus.publish(received(world))
    await wait_for_mails(notifier.recorder, 1)
    mail = notifier.recorder.received[0]
    m = mail.message
    # The faxbox owner (their alternate address) and the extra recipients.
    assert sorted(mail.rcpt_tos) == everyone(world)
    assert_automatic_reply_headers(m)
    assert m["In-Reply-To"] is None
    (attachment,) = list(m.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == "+442079460958_2026-11-10_10-30-00.pdf"
    assert attachment.get_content() == b"%PDF-1.4 received fax"
    text = text_of(m)
    for expected in ("+442079460958", "ACME FAX 1", "Pages:              3", "+14155550100"):
        assert expected in text


async def test_inbound_failed_mail_has_the_partial_pages(notifier: Running, world: World) -> None:
    await notifier.bus.publish(inbound_failed(world))
    await wait_for_mails(notifier.recorder, 1)
    m = notifier.recorder.received[0].message
    assert_automatic_reply_headers(m)
    assert "+442079460958" in m["Subject"]
    text = text_of(m)
    assert "The sending fax machine hung up between pages." in text
    assert "Pages received:  1" in text
    (attachment,) = list(m.iter_attachments())
    assert attachment.get_filename() == "+442079460958_2026-11-10_10-30-00_partial.pdf"


# --- once, retries, refusals ----------------------------------------------------------------


async def test_the_same_event_three_times_sends_one_mail(notifier: Running, world: World) -> None:
    event = failed(world)
    for _ in range(3):
        await notifier.bus.publish(event)
    await wait_for_mails(notifier.recorder, 1)
    # Duplicates that arrive while the first is being sent wait a few seconds, then see
    # the ledger say "sent".
    notes = [await next_note(notifier.bus) for _ in range(3)]
    await asyncio.sleep(0.5)
    assert len(notifier.recorder.received) == 1
    # Announced again on each redelivery, but always as the same message.
    assert len({n.message_id for n in notes}) == 1
    assert {n.smtp_message_id for n in notes} == {
        notifier.recorder.received[0].message["Message-ID"]
    }


async def test_a_4xx_answer_is_retried_and_then_delivered_once(
    notifier: Running, world: World
) -> None:
    notifier.recorder.script.append("451 4.3.0 Mailbox busy, try later")
    await notifier.bus.publish(failed(world))
    await wait_for_mails(notifier.recorder, 1)
    await asyncio.sleep(0.5)
    assert notifier.recorder.data_commands == 2
    assert len(notifier.recorder.received) == 1


async def test_a_5xx_answer_goes_to_the_dead_letter_queue_with_the_server_answer(
    notifier: Running, world: World
) -> None:
    notifier.recorder.script.append("554 5.7.1 Relay access denied for faxbox")
    await notifier.bus.publish(failed(world))
    dead = await next_in(notifier.bus, notifier.bus.topology.dead_letter_queue("notifier"))
    headers = dead.headers or {}
    assert headers[ERROR_KIND_HEADER] == "permanent"
    assert "554" in str(headers[REASON_HEADER])
    assert "Relay access denied for faxbox" in str(headers[REASON_HEADER])
    assert notifier.recorder.received == []


async def test_no_success_mail_when_the_faxbox_turned_them_off(
    notifier: Running, world: World
) -> None:
    await notifier.bus.publish(sent(world, world.quiet_faxbox))
    await notifier.bus.publish(failed(world))  # arrives after the first was handled
    await wait_for_mails(notifier.recorder, 1)
    await asyncio.sleep(0.5)
    assert [r.message["Subject"] for r in notifier.recorder.received] == [
        "Fax to +14155550123 failed"
    ]
    assert notifier.recorder.data_commands == 1
