"""The inbound receiver's storing and announcing, with fakes of its own ports."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path
from typing import Any

import pikepdf
import pytest
from PIL import Image
from pymongo.errors import ServerSelectionTimeoutError

from faxbox.fax.outcome import FailureClass as EngineClass
from faxbox.fax.outcome import FaxOutcome
from faxbox.inbound.handlers import Deps, _conclude, _lookup, store_pending
from faxbox.inbound.pdf import tiff_to_pdf
from faxbox.inbound.pending import Reception
from faxbox.shared.contracts import (
    DocumentRef,
    FailureClass,
    FaxFailure,
    InboundFaxFailed,
    InboundFaxReceived,
    Message,
)
from faxbox.shared.outbox import Decided, Outbox
from faxbox.shared.store import Account, Faxbox
from faxbox.shared.testing import MemoryDecisionStore, MemoryDocuments, MemoryPublisher

A4_W = 1728 / 204 * 72
A4_H = 2292 / 196 * 72


def fax_tiff(
    path: Path, pages: int, rows: int = 2292, dpi: tuple[int, int] | None = (204, 196)
) -> Path:
    frames = [Image.new("1", (1728, rows), 1) for _ in range(pages)]
    options: dict[str, Any] = {"compression": "group4", "save_all": True}
    if dpi is not None:
        options["dpi"] = dpi
    frames[0].save(path, append_images=frames[1:], **options)
    return path


def sizes(pdf: bytes) -> list[tuple[float, float]]:
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        return [(float(p.mediabox[2]), float(p.mediabox[3])) for p in doc.pages]


def test_fine_and_standard_pages_keep_their_shape(tmp_path: Path) -> None:
    fine = sizes(tiff_to_pdf(fax_tiff(tmp_path / "f.tif", 2)))
    assert fine == [pytest.approx((A4_W, A4_H), abs=0.5)] * 2
    standard = sizes(tiff_to_pdf(fax_tiff(tmp_path / "s.tif", 1, rows=1146, dpi=(204, 98))))
    assert standard == [pytest.approx((A4_W, A4_H), abs=1)]


def test_missing_resolution_tags_fall_back_to_the_negotiated_resolution(tmp_path: Path) -> None:
    path = fax_tiff(tmp_path / "n.tif", 1, rows=1146, dpi=None)
    assert sizes(tiff_to_pdf(path, y_resolution_ppm=3850)) == [pytest.approx((A4_W, A4_H), abs=1)]


class OneNumber:
    """A directory with one number assigned."""

    def __init__(self, number: str, found: tuple[Faxbox, Account]) -> None:
        self.number = number
        self.found = found
        self.asked: list[str] = []

    async def faxbox_for_number(self, number: str) -> tuple[Faxbox, Account] | None:
        self.asked.append(number)
        return self.found if number == self.number else None


async def test_the_request_uri_is_looked_up_before_to_in_every_national_form(
    parts: Parts,
) -> None:
    deps, _, faxbox, account = parts
    directory = OneNumber("+16465550101", (faxbox, account))
    deps = dataclasses.replace(deps, directory=directory)
    # Behind a registrar the Request-URI is our contact: the DID is found in To.
    found = await _lookup(deps, ["faxbox", "6465550101"])
    assert found == ("+16465550101", faxbox, account)
    assert directory.asked == ["+16465550101"]
    # A trunk that routes by DID: the Request-URI wins over a To that says otherwise.
    directory.asked.clear()
    assert await _lookup(deps, ["16465550101", "+12125550100"]) == (
        "+16465550101",
        faxbox,
        account,
    )
    assert directory.asked == ["+16465550101"]
    assert await _lookup(deps, ["faxbox", "1001*"]) is None


async def test_an_event_the_broker_did_not_take_is_published_by_the_sweeper() -> None:
    store, broken, bus = MemoryDecisionStore(), MemoryPublisher(), MemoryPublisher()
    broken.failures.append(ConnectionError("broker away"))
    event = InboundFaxFailed(
        fax_id="fax_1",
        account_id="acc1",
        month="202611",
        faxbox_id="fbx1",
        user_id="usr1",
        caller_number="+12125550100",
        called_number="+16465550101",
        failure=FaxFailure(failure_class=FailureClass.line, code=2, text="no fax"),
        pages_received=0,
    )
    with pytest.raises(ConnectionError):
        await Outbox(store, broken).emit(Decided(event.fax_id, (event,)))
    assert list(store.owed_since) == [event.fax_id]
    assert await Outbox(store, bus).sweep(grace_s=0) == 1
    assert bus.published == [event]
    assert not store.owed_since
    await Outbox(store, bus).emit(Decided(event.fax_id, (event,)))
    assert not store.owed_since


class NoDirectory:
    async def faxbox_for_number(self, number: str) -> tuple[Faxbox, Account] | None:
        return None


def outcome(success: bool, pages: int, code: int = 0) -> FaxOutcome:
    return FaxOutcome(
        role="receive",
        success=success,
        completion_code=code,
        completion_name="X",
        completion_text="x",
        failure_class=None if success else EngineClass.LINE,
        message="The telephone call was cut off before the fax finished.",
        hint="",
        pages_transferred=pages,
        pages_in_file=pages,
        bit_rate=14400,
        ecm=True,
        x_resolution=8031,
        y_resolution=7700,
        remote_id="CALLER",
        pages=[],
    )


Parts = tuple[Deps, MemoryDocuments, Faxbox, Account]


@pytest.fixture
def parts() -> Parts:
    documents = MemoryDocuments()
    account = Account(id="acc1", name="Acme", realm="acme.example")
    faxbox = Faxbox(id="fbx1", account_id="acc1", owner_user_id="usr1")
    deps = Deps(
        directory=NoDirectory(),
        documents=documents,
        decisions=MemoryDecisionStore(),
        calls=asyncio.Semaphore(1),
    )
    return deps, documents, faxbox, account


def reception(parts: Parts, result: FaxOutcome, fax_id: str = "fax_1") -> Reception:
    _, _, faxbox, account = parts
    return Reception(
        fax_id=fax_id,
        account_id=account.id,
        faxbox_id=faxbox.id,
        owner_user_id=faxbox.owner_user_id,
        month="202611",
        caller="+12125550100",
        called="+16465550101",
        duration_s=61.5,
        outcome=result,
    )


async def conclude(parts: Parts, result: FaxOutcome, path: Path) -> Message:
    decided = await _conclude(parts[0], reception(parts, result), path)
    assert decided.key == "fax_1"
    (event,) = decided.messages
    return event


def stored(parts: Parts, ref: DocumentRef) -> tuple[str, bytes]:
    """The content type and bytes of a document the receiver stored."""
    kept, data, _ = parts[1].files[ref.file_id]
    return kept.content_type, data


async def test_a_complete_fax_is_stored_as_tiff_and_pdf_and_announced(
    parts: Parts, tmp_path: Path
) -> None:
    event = await conclude(parts, outcome(True, 2), fax_tiff(tmp_path / "rx.tif", 2))
    assert isinstance(event, InboundFaxReceived)
    assert (event.fax_id, event.account_id, event.month) == ("fax_1", "acc1", "202611")
    assert (event.faxbox_id, event.user_id) == ("fbx1", "usr1")
    assert (event.caller_number, event.called_number) == ("+12125550100", "+16465550101")
    assert event.statistics.pages_transferred == 2
    assert event.statistics.remote_station_id == "CALLER"
    assert event.statistics.duration_s == 61.5
    assert stored(parts, event.tiff)[0] == "image/tiff"
    assert stored(parts, event.pdf)[0] == "application/pdf"
    assert len(sizes(stored(parts, event.pdf)[1])) == 2


async def test_a_partial_fax_keeps_its_pages(parts: Parts, tmp_path: Path) -> None:
    event = await conclude(parts, outcome(False, 1, code=49), fax_tiff(tmp_path / "rx.tif", 1))
    assert isinstance(event, InboundFaxFailed)
    assert event.pages_received == 1
    assert event.failure.failure_class is FailureClass.line
    assert event.failure.code == 49
    assert event.partial_pdf is not None
    assert len(sizes(stored(parts, event.partial_pdf)[1])) == 1


async def test_a_call_without_pages_is_reported_without_documents(
    parts: Parts, tmp_path: Path
) -> None:
    event = await conclude(parts, outcome(False, 0, code=2), tmp_path / "never-written.tif")
    assert isinstance(event, InboundFaxFailed)
    assert (event.pages_received, event.partial_pdf) == (0, None)
    assert not parts[1].files


class DatabaseDown:
    """Documents whose server does not answer for the first ``outage`` puts."""

    def __init__(self, documents: MemoryDocuments, outage: int) -> None:
        self.documents = documents
        self.outage = outage

    async def put(self, *args: Any, **kwargs: Any) -> DocumentRef:
        if self.outage:
            self.outage -= 1
            raise ServerSelectionTimeoutError("127.0.0.1:27017: connection refused")
        return await self.documents.put(*args, **kwargs)

    async def get(self, ref: DocumentRef) -> bytes:
        return await self.documents.get(ref)

    async def find(self, account_id: str, month: str, fax_id: str, role: str) -> DocumentRef | None:
        return await self.documents.find(account_id, month, fax_id, role)


async def test_a_fax_kept_during_an_outage_is_stored_once_the_database_answers(
    parts: Parts, tmp_path: Path
) -> None:
    deps, documents, _, _ = parts
    deps = dataclasses.replace(
        deps, documents=DatabaseDown(documents, outage=1), spool_dir=tmp_path / "spool"
    )
    line_file = fax_tiff(tmp_path / "rx.tif", 2)
    deps.pending.keep(reception(parts, outcome(True, 2)), line_file)
    assert not line_file.exists()  # moved, not copied: the call's directory goes
    with pytest.raises(ServerSelectionTimeoutError):
        await store_pending(deps)
    assert deps.pending.count() == 1
    assert not await deps.decisions.get("fax_1")

    (recorded,) = await store_pending(deps)  # the database is back
    (event,) = recorded.messages
    assert isinstance(event, InboundFaxReceived)
    assert event.statistics.pages_transferred == 2
    assert len(sizes(stored(parts, event.pdf)[1])) == 2
    assert deps.pending.count() == 0
    assert await store_pending(deps) == []


async def test_a_kept_fax_recorded_before_a_crash_is_not_stored_again(
    parts: Parts, tmp_path: Path
) -> None:
    deps = dataclasses.replace(parts[0], spool_dir=tmp_path / "spool")
    kept = deps.pending.keep(reception(parts, outcome(True, 2)), fax_tiff(tmp_path / "rx.tif", 2))
    first = await deps.decisions.record(await _conclude(deps, kept.reception, kept.pages))
    files = len(parts[1].files)
    (again,) = await store_pending(deps)  # the entry outlived the record: a crash between
    assert again.messages == first.messages
    assert len(parts[1].files) == files
    assert deps.pending.count() == 0


def test_an_entry_being_written_is_not_taken(parts: Parts, tmp_path: Path) -> None:
    deps = dataclasses.replace(parts[0], spool_dir=tmp_path / "spool")
    (deps.pending.directory / "fax_half").mkdir(parents=True)
    (deps.pending.directory / "fax_half" / "received.tif").write_bytes(b"II*\x00")
    assert deps.pending.all() == []
