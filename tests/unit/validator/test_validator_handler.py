"""The MailReceived handler with in-memory versions of the validator's own ports."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from faxbox.render import RenderedDocument
from faxbox.shared.bus import PermanentError
from faxbox.shared.contracts import (
    DocumentRef,
    MailReceived,
    Message,
    OutboundFaxRejected,
    OutboundFaxRequested,
)
from faxbox.shared.store import NotFound
from faxbox.validator.decision import Limits
from faxbox.validator.handler import Deps, decision_message_id, on_mail_received
from faxbox.validator.ports import LedgerEntry
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


class FakeDocuments:
    def __init__(self) -> None:
        self.files: dict[str, tuple[DocumentRef, bytes, dict[str, Any]]] = {}

    def add_raw(self, raw: bytes) -> DocumentRef:
        ref = DocumentRef(
            account_id="intake",
            month="202610",
            file_id=f"raw{len(self.files)}",
            filename="mail.eml",
            content_type="message/rfc822",
            length=len(raw),
            sha256=hashlib.sha256(raw).hexdigest(),
        )
        self.files[ref.file_id] = (ref, raw, {})
        return ref

    async def get(self, ref: DocumentRef) -> bytes:
        if ref.file_id not in self.files:
            raise NotFound("document", ref.file_id)
        return self.files[ref.file_id][1]

    async def put(
        self,
        account_id: str,
        month: str,
        data: bytes,
        *,
        filename: str,
        content_type: str,
        metadata: Mapping[str, Any],
    ) -> DocumentRef:
        ref = DocumentRef(
            account_id=account_id,
            month=month,
            file_id=f"doc{len(self.files)}",
            filename=filename,
            content_type=content_type,
            length=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        self.files[ref.file_id] = (ref, data, dict(metadata))
        return ref

    async def find(self, account_id: str, month: str, fax_id: str, role: str) -> DocumentRef | None:
        for ref, _data, meta in self.files.values():
            if (ref.account_id, ref.month) == (account_id, month) and meta == {
                "fax_id": fax_id,
                "role": role,
            }:
                return ref
        return None

    def stored_for(self, fax_id: str) -> list[str]:
        return sorted(m["role"] for _r, _d, m in self.files.values() if m.get("fax_id") == fax_id)


class FakeLedger:
    def __init__(self) -> None:
        self.entries: dict[str, LedgerEntry] = {}
        self.fail_next_record = False

    async def get(self, fax_id: str) -> LedgerEntry | None:
        return self.entries.get(fax_id)

    async def record(self, fax_id: str, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        if self.fail_next_record:
            self.fail_next_record = False
            raise Flaky("database went away")
        entry = self.entries.setdefault(fax_id, LedgerEntry(messages, False))
        return entry.messages

    async def mark_published(self, fax_id: str) -> None:
        self.entries[fax_id] = LedgerEntry(self.entries[fax_id].messages, True)


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[Message] = []
        self.fail_after: int | None = None  # publishes that succeed before one fails

    @property
    def fail_next(self) -> bool:
        return self.fail_after == 0

    @fail_next.setter
    def fail_next(self, value: bool) -> None:
        self.fail_after = 0 if value else None

    async def publish(self, message: Message) -> None:
        if self.fail_after is not None:
            if self.fail_after == 0:
                self.fail_after = None
                raise Flaky("no confirm")
            self.fail_after -= 1
        self.published.append(message)


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
        self.documents = FakeDocuments()
        self.ledger = FakeLedger()
        self.publisher = FakePublisher()
        self.renderer = CountingRenderer()
        self.counters = FakeCounters()
        self.claims = FakeClaims()
        self.deps = Deps(
            directory=FakeDirectory(standard_world()),
            counters=self.counters,
            renderer=self.renderer,
            documents=self.documents,
            ledger=self.ledger,
            publisher=self.publisher,
            limits=Limits(),
            claims=self.claims,
        )

    def mail(self, raw: bytes, fax_id: str = "fax1", uid: int = 1) -> MailReceived:
        return MailReceived(
            fax_id=fax_id,
            mailbox="INBOX",
            uid_validity=1,
            uid=uid,
            rfc822_message_id="<m@example.com>",
            raw=self.documents.add_raw(raw),
            received_at=RECEIVED,
        )


@pytest.fixture
def h() -> Harness:
    return Harness()


async def test_accepted_mail_becomes_a_fax_request(h: Harness) -> None:
    raw = gmail("alice@example.com", [("scan.pdf", pdf(2))])
    await on_mail_received(h.mail(raw), h.deps)
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


async def test_known_sender_with_problems_gets_every_reason(h: Harness) -> None:
    raw = gmail("alice@example.com", [], to="12-34@acme.fax.test")
    message = h.mail(raw)
    await on_mail_received(message, h.deps)
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
        await on_mail_received(h.mail(raw), h.deps)
    assert h.publisher.published == []


async def test_automatic_mail_is_acked_quietly(h: Harness) -> None:
    raw = gmail(
        "alice@example.com", [("scan.pdf", pdf())], headers={"Auto-Submitted": "auto-replied"}
    )
    await on_mail_received(h.mail(raw), h.deps)
    assert h.publisher.published == []
    assert h.renderer.calls == 0


async def test_missing_raw_mail_is_permanent(h: Harness) -> None:
    message = h.mail(b"From: a@b.c\n\n")
    h.documents.files.clear()
    with pytest.raises(PermanentError, match="not in the store"):
        await on_mail_received(message, h.deps)


async def test_unconfirmed_decision_is_published_again_without_rendering(h: Harness) -> None:
    message = h.mail(gmail("alice@example.com", [("scan.pdf", pdf())]))
    h.publisher.fail_next = True
    with pytest.raises(Flaky):
        await on_mail_received(message, h.deps)
    await on_mail_received(message, h.deps)  # the broker redelivers
    (request,) = h.publisher.published
    assert request.message_id == decision_message_id("fax1")
    assert h.renderer.calls == 1
    assert h.documents.stored_for("fax1") == ["fax_tiff", "original"]


async def test_confirmed_decision_is_not_published_twice(h: Harness) -> None:
    message = h.mail(gmail("alice@example.com", [("scan.pdf", pdf())]))
    await on_mail_received(message, h.deps)
    await on_mail_received(message, h.deps)
    assert len(h.publisher.published) == 1
    assert h.renderer.calls == 1


async def test_crash_before_the_ledger_reuses_stored_documents_and_pages(h: Harness) -> None:
    world = standard_world()
    world.add("gina@example.com", user_limit=2)
    h.deps = dataclasses.replace(h.deps, directory=FakeDirectory(world))
    message = h.mail(gmail("gina@example.com", [("scan.pdf", pdf(2))]))
    h.ledger.fail_next_record = True
    with pytest.raises(Flaky):
        await on_mail_received(message, h.deps)
    await on_mail_received(message, h.deps)
    (request,) = h.publisher.published
    assert isinstance(request, OutboundFaxRequested)  # its own 2 pages were not counted twice
    assert h.documents.stored_for("fax1") == ["fax_tiff", "original"]
    assert sum(h.counters.pages.values()) == 2


async def test_merged_attachments_keep_every_original(h: Harness) -> None:
    raw = gmail("frank@example.com", [("a.pdf", pdf()), ("b.pdf", pdf(2))])
    await on_mail_received(h.mail(raw), h.deps)
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
    await on_mail_received(h.mail(raw), h.deps)
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
    entry = h.ledger.entries["fax1"]
    assert entry.messages == (first, second)
    assert entry.published


async def test_pages_count_once_per_fax(h: Harness) -> None:
    world = standard_world()
    world.add("gina@example.com", user_limit=10)
    h.deps = dataclasses.replace(h.deps, directory=FakeDirectory(world))
    await on_mail_received(h.mail(gmail("gina@example.com", [("s.pdf", pdf(2))], to=TWO)), h.deps)
    assert sum(h.counters.pages.values()) == 4


async def test_a_crash_between_publishes_republishes_every_message_with_its_id(
    h: Harness,
) -> None:
    message = h.mail(gmail("alice@example.com", [("scan.pdf", pdf())], to=TWO))
    h.publisher.fail_after = 1  # the first fax's request goes out, the second's does not
    with pytest.raises(Flaky):
        await on_mail_received(message, h.deps)
    await on_mail_received(message, h.deps)  # the broker redelivers
    ids = [m.message_id for m in h.publisher.published]
    assert ids == [decision_message_id(f) for f in ("fax1", "fax1", "fax1-2")]
    assert h.renderer.calls == 1


async def test_two_envelope_copies_are_two_faxes(h: Harness) -> None:
    sent = gmail("alice@example.com", [("scan.pdf", pdf())], to=TWO)
    await on_mail_received(h.mail(copy_for(sent, "+12125550147@acme.fax.test")), h.deps)
    await on_mail_received(
        h.mail(copy_for(sent, "2125550148@acme.fax.test"), "fax2", uid=2), h.deps
    )
    requests = h.publisher.published
    assert [(m.fax_id, getattr(m, "destination", None)) for m in requests] == [
        ("fax1", "+12125550147"),
        ("fax2", "+12125550148"),
    ]


async def test_copies_with_the_same_rejection_send_it_once(h: Harness) -> None:
    sent = gmail("alice@example.com", [], to=TWO)
    await on_mail_received(h.mail(copy_for(sent, "+12125550147@acme.fax.test")), h.deps)
    await on_mail_received(
        h.mail(copy_for(sent, "2125550148@acme.fax.test"), "fax2", uid=2), h.deps
    )
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
    await on_mail_received(h.mail(raw), h.deps)
    (rejected,) = h.publisher.published
    assert isinstance(rejected, OutboundFaxRejected)
    assert rejected.fax_id == "fax1"
    assert [r.code.value for r in rejected.reasons] == ["invalid_number", "invalid_number"]
    assert "12-34@acme.fax.test" in rejected.reasons[0].message
    assert "555@acme.fax.test" in rejected.reasons[1].message
    assert h.documents.stored_for("fax1") == []
