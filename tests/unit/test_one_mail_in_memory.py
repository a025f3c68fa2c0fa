"""One mail through the pipeline in memory: ``MailReceived`` → validator → transmitter →
notifier and history, each service's real handlers on the in-memory bus (same routing,
same settling policy, the same outbox runtime), with fakes of our own ports only: the
directory, the page counters, the job ledger, the carrier channels, the fax line, the
mail server."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from faxbox.history.handlers import record_event
from faxbox.notifier import handlers as notifier
from faxbox.shared.bus import Handler
from faxbox.shared.contracts import (
    DocumentRef,
    MailReceived,
    Message,
    NotificationSent,
    OutboundFaxRequested,
)
from faxbox.shared.outbox import Outbox
from faxbox.shared.routing import subscriptions
from faxbox.shared.testing import MemoryBus, MemoryDecisionStore
from faxbox.transmitter.handlers import Deps as TransmitterDeps
from faxbox.transmitter.handlers import handle_outbound
from faxbox.validator.decision import Limits
from faxbox.validator.handlers import Deps as ValidatorDeps
from faxbox.validator.handlers import on_mail_received
from faxbox.validator.renderer import InlineRenderer
from tests.unit.history.memory_history import MemoryHistory
from tests.unit.notifier.notifier_fakes import FakeClaims as FakeSendClaims
from tests.unit.notifier.notifier_fakes import FakeDirectory as FakeNotifierDirectory
from tests.unit.notifier.notifier_fakes import FakeMailer
from tests.unit.transmitter.transmitter_fakes import (
    FakeCancellations,
    FakeCarriers,
    FakeDocuments,
    FakeLedger,
    FakeLine,
    FakeSlots,
    carrier,
    sent_report,
)
from tests.unit.validator.mailkit import (
    FakeClaims,
    FakeCounters,
    FakeDirectory,
    gmail,
    pdf,
    standard_world,
)

RECEIVED = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)


async def test_a_mail_ends_as_a_sent_fax_in_its_history_document(tmp_path: Path) -> None:
    # The shared in-memory documents, keeping what a call transmitted as well.
    bus, documents, world = MemoryBus(), FakeDocuments(), standard_world()

    validator = ValidatorDeps(
        directory=FakeDirectory(world),
        counters=FakeCounters(),
        renderer=InlineRenderer(),
        documents=documents,
        decisions=MemoryDecisionStore(),
        limits=Limits(),
        claims=FakeClaims(),
    )
    bus.consumer(
        "validator",
        {
            MailReceived: Outbox(validator.decisions, bus).consuming(
                partial(on_mail_received, deps=validator)
            )
        },
    )

    line = FakeLine(sent_report(pages=2))
    transmitting = Outbox(MemoryDecisionStore(), bus)
    transmitter = TransmitterDeps(
        ledger=FakeLedger(),
        slots=FakeSlots(),
        carriers=FakeCarriers([carrier()]),
        documents=documents,
        line=line,
        decisions=transmitting.store,
        outbox=transmitting,
        cancellations=FakeCancellations(),
        worker_id="w1",
        calls=asyncio.Semaphore(1),
        spool_dir=tmp_path,
    )
    bus.consumer(
        "transmitter",
        {OutboundFaxRequested: transmitting.consuming(partial(handle_outbound, deps=transmitter))},
    )

    mailer = FakeMailer()
    notices = notifier.Deps(
        directory=FakeNotifierDirectory(world.users, world.faxboxes, world.account),
        documents=documents,
        claims=FakeSendClaims(),
        decisions=MemoryDecisionStore(),
        mailer=mailer,
        sender="Faxbox <fax@faxbox.test>",
        message_id_domain="faxbox.test",
    )
    sending = Outbox(notices.decisions, bus)
    notifying: dict[type[Message], Handler] = {
        kind: sending.consuming(partial(handler, deps=notices))
        for kind, handler in notifier.HANDLERS.items()
    }
    bus.consumer("notifier", notifying)

    history = MemoryHistory()
    recording: dict[type[Message], Handler] = {
        kind: partial(record_event, recorder=history) for kind in subscriptions("history")
    }
    bus.consumer("history", recording)

    raw = gmail("alice@example.com", [("scan.pdf", pdf(2))])
    ref = DocumentRef(
        account_id="intake",
        month="202611",
        file_id="raw1",
        filename="mail.eml",
        content_type="message/rfc822",
        length=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
    )
    await bus.publish(
        MailReceived(
            fax_id="fax_1",
            mailbox="INBOX",
            uid_validity=1,
            uid=1,
            rfc822_message_id="<m@example.com>",
            raw=documents.keep(ref, raw),
            received_at=RECEIVED,
        )
    )
    await bus.join()

    assert bus.dead_letters == []
    assert bus.retries == []
    assert [type(m).__name__ for m in bus.published] == [
        "MailReceived",
        "OutboundFaxRequested",
        "FaxAttemptStarted",
        "FaxSent",
        "NotificationSent",
    ]
    (dial,) = line.dials
    assert dial.destination == "+12125551234"
    ((mail, recipients),) = mailer.sent
    assert recipients == ["alice.notify@example.org"]
    assert "+12125551234" in mail["Subject"]

    document = history.document("acc_acme", "202611", "fax_1")
    assert document is not None
    assert document["state"]["status"] == "sent"
    assert (document["remote_number"], document["pages_total"]) == ("+12125551234", 2)
    assert {entry["type"] for entry in document["timeline"]} == {
        "OutboundFaxRequested",
        "FaxAttemptStarted",
        "FaxSent",
        "NotificationSent",
    }
    (note,) = document["notifications"]
    assert note["kind"] == "sent"
    (sent_note,) = bus.of(NotificationSent)
    assert note["smtp_message_id"] == sent_note.smtp_message_id == mail["Message-ID"]
