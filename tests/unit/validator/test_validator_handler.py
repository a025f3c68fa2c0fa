"""The MailReceived handler with in-memory versions of the validator's own ports."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from functools import partial

import pytest

from faxbox.render import RenderedDocument
from faxbox.shared.bus import PermanentError
from faxbox.shared.contracts import (
    DocumentRef,
    MailReceived,
    OutboundFaxRejected,
    OutboundFaxRequested,
)
from faxbox.shared.outbox import Outbox
from faxbox.shared.testing import MemoryDecisionStore, MemoryDocuments, MemoryPublisher
from faxbox.validator.decision import Limits
from faxbox.validator.handlers import Deps, decision_message_id, on_mail_received
from faxbox.validator.renderer import InlineRenderer
from tests.unit.validator.mailkit import (
    FakeClaims,
    FakeCounters,
    FakeDirectory,
    gmail,
    pdf,
    standard_world,
)

RECEIVED = datetime(2026, 10, 31, 23, 59, tzinfo=UTC)


class Flaky(Exception):
    pass


class CountingRenderer(InlineRenderer):
    def __init__(self) -> None:
        self.calls = 0

    async def render(
        self, data: bytes, kind: str, resolution: str, max_pages: int
    ) -> RenderedDocument:
        self.calls += 1
        return await super().render(data, kind, resolution, max_pages)


class Harness:
    def __init__(self) -> None:
        self.documents = MemoryDocuments()
        self.decisions = MemoryDecisionStore()
        self.publisher = MemoryPublisher()
        self.renderer = CountingRenderer()
        self.counters = FakeCounters()
        self.claims = FakeClaims()
        self.deps = Deps(
            directory=FakeDirectory(standard_world()),
            counters=self.counters,
            renderer=self.renderer,
            documents=self.documents,
            decisions=self.decisions,
            limits=Limits(),
            claims=self.claims,
        )
        self._raws = 0

    def mail(self, raw: bytes, fax_id: str = "fax1", uid: int = 1) -> MailReceived:
        self._raws += 1
        ref = DocumentRef(
            account_id="intake",
            month="202610",
            file_id=f"raw{self._raws}",
            filename="mail.eml",
            content_type="message/rfc822",
            length=len(raw),
            sha256=hashlib.sha256(raw).hexdigest(),
        )
        return MailReceived(
            fax_id=fax_id,
            mailbox="INBOX",
            uid_validity=1,
            uid=uid,
            rfc822_message_id="<m@example.com>",
            raw=self.documents.keep(ref, raw),
            received_at=RECEIVED,
        )

    async def handle(self, message: MailReceived) -> None:
        """As the validator's consumer does: what the handler decides is recorded, published."""
        outbox = Outbox(self.decisions, self.publisher)
        await outbox.consuming(partial(on_mail_received, deps=self.deps))(message)


@pytest.fixture
def h() -> Harness:
    return Harness()


async def test_accepted_mail_becomes_a_fax_request(h: Harness) -> None:
    raw = gmail("alice@example.com", [("scan.pdf", pdf(2))])
    await h.handle(h.mail(raw))
    (request,) = h.publisher.published
    assert isinstance(request, OutboundFaxRequested)
    assert request.message_id == decision_message_id("fax1")
    assert (request.account_id, request.month, request.user_id, request.faxbox_id) == (
        "acc_acme",
        "202610",
        "usr_1",
        "fbx_1",
    )
    assert request.destination == "+12125551234"
    assert request.pages == 2
    assert request.settings.caller_id == "+12125550100"
    assert request.settings.resolution == "fine"
    assert request.sender_email == "alice@example.com"
    assert request.source_message_id is not None
    assert request.original.filename == "scan.pdf"
    assert request.original.content_type == "application/pdf"
    assert request.fax_tiff.content_type == "image/tiff"
    tiff = await h.documents.get(request.fax_tiff)
    assert tiff[:4] == b"II*\x00"
    assert h.documents.stored_for("fax1") == ["fax_tiff", "original"]


async def test_the_faxboxs_route_flags_go_with_its_fax_requests(h: Harness) -> None:
    # The transmitter opens a require-flags carrier only to a request carrying the flag.
    directory = h.deps.directory
    assert isinstance(directory, FakeDirectory)
    box = directory.world.faxboxes["fbx_1"]
    directory.world.faxboxes["fbx_1"] = box.model_copy(update={"route_flags": ["premium"]})
    await h.handle(h.mail(gmail("alice@example.com", [("scan.pdf", pdf())])))
    (request,) = h.publisher.published
    assert isinstance(request, OutboundFaxRequested)
    assert request.route_flags == ("premium",)


async def test_known_sender_with_problems_gets_every_reason(h: Harness) -> None:
    raw = gmail("alice@example.com", [], to="12-34@acme.fax.test")
    message = h.mail(raw)
    await h.handle(message)
    (rejected,) = h.publisher.published
    assert isinstance(rejected, OutboundFaxRejected)
    assert [r.code.value for r in rejected.reasons] == ["invalid_number", "no_attachment"]
    assert rejected.raw == message.raw
    assert rejected.destination_raw == "12-34@acme.fax.test"
    assert rejected.user_id == "usr_1"
    assert h.documents.stored_for("fax1") == []


async def test_unknown_sender_is_dead_lettered_with_the_reason(h: Harness) -> None:
    raw = gmail("mallory@evil.example", [("scan.pdf", pdf())])
    with pytest.raises(PermanentError, match="unknown_sender"):
        await h.handle(h.mail(raw))
    assert h.publisher.published == []


async def test_automatic_mail_is_acked_quietly(h: Harness) -> None:
    raw = gmail(
        "alice@example.com", [("scan.pdf", pdf())], headers={"Auto-Submitted": "auto-replied"}
    )
    await h.handle(h.mail(raw))
    assert h.publisher.published == []
    assert h.renderer.calls == 0


async def test_missing_raw_mail_is_permanent(h: Harness) -> None:
    message = h.mail(b"From: a@b.c\n\n")
    h.documents.files.clear()
    with pytest.raises(PermanentError, match="not in the store"):
        await h.handle(message)


async def test_unconfirmed_decision_is_published_again_without_rendering(h: Harness) -> None:
    message = h.mail(gmail("alice@example.com", [("scan.pdf", pdf())]))
    h.publisher.failures.append(Flaky("no confirm"))
    with pytest.raises(Flaky):
        await h.handle(message)
    await h.handle(message)  # the broker redelivers
    (request,) = h.publisher.published
    assert request.message_id == decision_message_id("fax1")
    assert h.renderer.calls == 1
    assert h.documents.stored_for("fax1") == ["fax_tiff", "original"]


async def test_confirmed_decision_is_not_published_twice(h: Harness) -> None:
    message = h.mail(gmail("alice@example.com", [("scan.pdf", pdf())]))
    await h.handle(message)
    await h.handle(message)
    assert len(h.publisher.published) == 1
    assert h.renderer.calls == 1


async def test_crash_before_the_ledger_reuses_stored_documents_and_pages(h: Harness) -> None:
    world = standard_world()
    world.add("gina@example.com", user_limit=2)
    h.deps = dataclasses.replace(h.deps, directory=FakeDirectory(world))
    message = h.mail(gmail("gina@example.com", [("scan.pdf", pdf(2))]))
    h.decisions.failures.append(Flaky("database went away"))
    with pytest.raises(Flaky):
        await h.handle(message)
    await h.handle(message)
    (request,) = h.publisher.published
    assert isinstance(request, OutboundFaxRequested)  # its own 2 pages were not counted twice
    assert h.documents.stored_for("fax1") == ["fax_tiff", "original"]
    assert h.counters.user_pages() == 2


async def test_merged_attachments_keep_every_original(h: Harness) -> None:
    raw = gmail("frank@example.com", [("a.pdf", pdf()), ("b.pdf", pdf(2))])
    await h.handle(h.mail(raw))
    (request,) = h.publisher.published
    assert isinstance(request, OutboundFaxRequested)
    assert request.pages == 3
    assert request.original.filename == "a.pdf"
    assert h.documents.stored_for("fax1") == ["fax_tiff", "original", "original-2"]


TWO = "+12125550147@acme.fax.test, 2125550148@acme.fax.test"


def copy_for(raw: bytes, recipient: str) -> bytes:
    return f"Delivered-To: fax@faxbox.test\r\nX-Original-To: {recipient}\r\n".encode() + raw


async def test_one_fax_per_number_with_the_document_stored_once(h: Harness) -> None:
    raw = gmail("alice@example.com", [("scan.pdf", pdf(2))], to=TWO)
    await h.handle(h.mail(raw))
    first, second = h.publisher.published
    assert isinstance(first, OutboundFaxRequested)
    assert isinstance(second, OutboundFaxRequested)
    assert (first.fax_id, second.fax_id) == ("fax1", "fax1-2")
    assert (first.destination, second.destination) == ("+12125550147", "+12125550148")
    assert first.message_id == decision_message_id("fax1")
    assert second.message_id == decision_message_id("fax1-2")
    assert first.fax_tiff == second.fax_tiff
    assert first.original == second.original
    assert first.source_message_id == second.source_message_id is not None
    assert h.documents.stored_for("fax1") == ["fax_tiff", "original"]
    assert h.documents.stored_for("fax1-2") == []
    entry = await h.decisions.get("fax1")
    assert entry is not None
    assert entry.messages == (first, second)
    assert not entry.owed


async def test_pages_count_once_per_fax(h: Harness) -> None:
    world = standard_world()
    world.add("gina@example.com", user_limit=10)
    h.deps = dataclasses.replace(h.deps, directory=FakeDirectory(world))
    await h.handle(h.mail(gmail("gina@example.com", [("s.pdf", pdf(2))], to=TWO)))
    assert h.counters.user_pages() == 4


async def test_a_crash_between_publishes_republishes_every_message_with_its_id(
    h: Harness,
) -> None:
    message = h.mail(gmail("alice@example.com", [("scan.pdf", pdf())], to=TWO))
    # The first fax's request goes out, the second's does not.
    h.publisher.failures = [None, Flaky("no confirm")]
    with pytest.raises(Flaky):
        await h.handle(message)
    await h.handle(message)  # the broker redelivers
    ids = [m.message_id for m in h.publisher.published]
    assert ids == [decision_message_id(f) for f in ("fax1", "fax1", "fax1-2")]
    assert h.renderer.calls == 1


async def test_two_envelope_copies_are_two_faxes(h: Harness) -> None:
    sent = gmail("alice@example.com", [("scan.pdf", pdf())], to=TWO)
    await h.handle(h.mail(copy_for(sent, "+12125550147@acme.fax.test")))
    await h.handle(h.mail(copy_for(sent, "2125550148@acme.fax.test"), "fax2", uid=2))
    requests = h.publisher.published
    assert [(m.fax_id, getattr(m, "destination", None)) for m in requests] == [
        ("fax1", "+12125550147"),
        ("fax2", "+12125550148"),
    ]


async def test_copies_with_the_same_rejection_send_it_once(h: Harness) -> None:
    sent = gmail("alice@example.com", [], to=TWO)
    await h.handle(h.mail(copy_for(sent, "+12125550147@acme.fax.test")))
    await h.handle(h.mail(copy_for(sent, "2125550148@acme.fax.test"), "fax2", uid=2))
    (rejected,) = h.publisher.published
    assert isinstance(rejected, OutboundFaxRejected)
    assert rejected.destination_raw == "+12125550147@acme.fax.test, 2125550148@acme.fax.test"
    assert [r.code.value for r in rejected.reasons] == ["no_attachment"]


async def test_a_rejection_lists_every_bad_address(h: Harness) -> None:
    raw = gmail(
        "alice@example.com",
        [("scan.pdf", pdf())],
        to="+12125550147@acme.fax.test, 12-34@acme.fax.test, 555@acme.fax.test",
    )
    await h.handle(h.mail(raw))
    (rejected,) = h.publisher.published
    assert isinstance(rejected, OutboundFaxRejected)
    assert rejected.fax_id == "fax1"
    assert [r.code.value for r in rejected.reasons] == ["invalid_number", "invalid_number"]
    assert "12-34@acme.fax.test" in rejected.reasons[0].message
    assert "555@acme.fax.test" in rejected.reasons[1].message
    assert h.documents.stored_for("fax1") == []
