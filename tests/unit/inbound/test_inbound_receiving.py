"""What a receiver that died mid-call leaves, and what the next one makes of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

from faxbox.fax.outcome import PageStats
from faxbox.inbound.pending import PendingSpool
from faxbox.inbound.receiving import (
    CUT_BY_US,
    AnsweredCall,
    Progress,
    ReceivingSpool,
    interrupted_outcome,
)

ANSWERED = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def page(number: int, result: str) -> PageStats:
    return PageStats(
        page=number, result=result, bit_rate=14400, ecm=True, x_resolution=8031,
        y_resolution=7700, width=1728, length=2200, image_size=30000, encoding=4,
        bad_rows=0, longest_bad_row_run=0, ecm_retries=0,
    )  # fmt: skip


def call(fax_id: str = "fax_1") -> AnsweredCall:
    return AnsweredCall(
        fax_id=fax_id, account_id="acc1", faxbox_id="fbx1", owner_user_id="usr1",
        month="202612", caller="+12125550163", called="+16465550121", answered_at=ANSWERED,
    )  # fmt: skip


def tiff(path: Path, pages: int) -> None:
    images = [Image.new("1", (1728, 100), 1) for _ in range(pages)]
    images[0].save(path, compression="group4", dpi=(204, 196), save_all=True,
                   append_images=images[1:])  # fmt: skip


def test_every_page_ended_with_the_end_of_document_is_a_fax_received() -> None:
    progress = Progress(remote_id="SENDER", pages=[page(1, "MPS"), page(2, "EOP")])
    outcome = interrupted_outcome(progress, pages_in_file=2)
    assert outcome.success
    assert (outcome.pages_transferred, outcome.remote_id, outcome.failure_class) == (
        2, "SENDER", None,
    )  # fmt: skip


def test_a_document_not_ended_is_a_reception_cut_off_with_its_pages() -> None:
    progress = Progress(remote_id="SENDER", pages=[page(1, "MPS")])
    outcome = interrupted_outcome(progress, pages_in_file=1)
    assert not outcome.success
    assert outcome.pages_transferred == 1
    assert outcome.completion_name == "T30_ERR_CALLDROPPED"
    assert outcome.message == CUT_BY_US
    # A page noted but not in the file does not count, even at the end of the document.
    cut = interrupted_outcome(Progress(pages=[page(1, "MPS"), page(2, "EOP")]), 1)
    assert (cut.success, cut.pages_transferred) == (False, 1)
    assert not interrupted_outcome(Progress(), 0).success


def test_what_a_dead_process_was_receiving_is_kept_for_storing(tmp_path: Path) -> None:
    spool, pending = ReceivingSpool(tmp_path), PendingSpool(tmp_path)
    receiving = spool.start(call())
    tiff(receiving.pages, 2)
    receiving.page_received(page(1, "MPS"), "SENDER")
    receiving.page_received(page(2, "EOP"), "SENDER")
    spool.start(call("fax_2"))  # answered, nothing arrived yet

    moved = spool.recover(pending, ANSWERED + timedelta(seconds=40))
    assert moved == ["fax_1", "fax_2"]
    assert not list(spool.directory.iterdir())
    kept = {p.reception.fax_id: p for p in pending.all()}
    first = kept["fax_1"]
    assert first.reception.outcome.success
    assert first.reception.duration_s == 40
    assert (first.reception.caller, first.reception.month) == ("+12125550163", "202612")
    assert first.pages.exists()
    second = kept["fax_2"].reception.outcome
    assert (second.success, second.pages_transferred) == (False, 0)


def test_a_call_that_ended_leaves_nothing_to_recover(tmp_path: Path) -> None:
    spool = ReceivingSpool(tmp_path)
    receiving = spool.start(call())
    receiving.close()
    assert spool.recover(PendingSpool(tmp_path), ANSWERED) == []
