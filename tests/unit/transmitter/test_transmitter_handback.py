"""A call that ends while the job ledger does not answer hands its job back to the
broker with the confirmed pages as a note; the next worker writes them into the job
first, so it neither loses them nor sends them again."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from faxbox.shared import notes
from faxbox.shared.bus import RetryLater
from faxbox.shared.contracts import FaxSent
from faxbox.transmitter.confirming import NOTE, carried_pages
from faxbox.transmitter.jobs import JobState
from tests.unit.transmitter.test_transmitter_resume import confirming
from tests.unit.transmitter.transmitter_fakes import (
    Clock,
    FakeLedger,
    FakeLine,
    FakeSlots,
    failed_report,
    page,
    request,
    sent_report,
    transmitter,
)

DATABASE_AWAY = ServerSelectionTimeoutError("the job ledger is away")


async def test_every_page_confirmed_while_the_ledger_is_away_is_never_sent_again(
    tmp_path: Path,
) -> None:
    clock, ledger, slots = Clock(), FakeLedger(), FakeSlots()
    ledger.confirm_raises = DATABASE_AWAY
    first = transmitter(
        tmp_path, FakeLine(confirming(5, sent_report(5), [])), clock=clock, ledger=ledger,
        slots=slots, worker_id="w1",
    )  # fmt: skip
    five = request("five", pages=5)
    with pytest.raises(RetryLater) as handed_back:
        await first.handle(five)
    carried = carried_pages(handed_back.value.notes)
    assert carried is not None
    assert (carried.pages, carried.call.attempt, carried.call.first_page) == (5, 1, 1)
    # Nothing was concluded: no outcome recorded, the job still on the line.
    assert not first.bus.of(FaxSent)
    on_the_line = ledger.jobs["fax_1"]
    assert on_the_line.state is JobState.IN_CALL
    # The channel is not released while the ledger is away: its lease runs out.
    assert not slots.released

    ledger.confirm_raises = None
    clock.advance(handed_back.value.delay_s + 1)
    line = FakeLine()
    second = transmitter(tmp_path, line, clock=clock, ledger=ledger, worker_id="w2")
    with notes.carrying(handed_back.value.notes):
        await second.handle(five)
    assert not line.dials
    assert ledger.jobs["fax_1"].state is JobState.SENT
    (sent,) = second.bus.of(FaxSent)
    assert (sent.attempts, sent.calls, sent.statistics.pages_transferred) == (1, 1, 5)


async def test_a_cut_call_handed_back_resumes_after_its_carried_pages(tmp_path: Path) -> None:
    clock, ledger = Clock(), FakeLedger()
    ledger.confirm_raises = DATABASE_AWAY
    cut = dataclasses.replace(
        failed_report("line", 21, pages=2), page_report=(page(1), page(2), page(3, False))
    )
    first = transmitter(tmp_path, FakeLine(confirming(2, cut, [])), clock=clock, ledger=ledger)
    five = request("five", pages=5)
    with pytest.raises(RetryLater) as handed_back:
        await first.handle(five)

    ledger.confirm_raises = None
    clock.advance(handed_back.value.delay_s + 1)
    rest = dataclasses.replace(sent_report(3), page_report=(page(3), page(4), page(5)))
    line = FakeLine(confirming(3, rest, []))
    second = transmitter(tmp_path, line, clock=clock, ledger=ledger, worker_id="w2")
    with notes.carrying(handed_back.value.notes):
        await second.handle(five)
    (redial,) = line.dials
    assert (redial.first_page, redial.pages_total) == (3, 3)
    (sent,) = second.bus.of(FaxSent)
    assert (sent.attempts, sent.calls, sent.statistics.pages_transferred) == (2, 2, 5)


async def test_a_stale_or_malformed_note_changes_nothing(tmp_path: Path) -> None:
    clock, ledger = Clock(), FakeLedger()
    line = FakeLine(confirming(2, sent_report(2), []))
    t = transmitter(tmp_path, line, clock=clock, ledger=ledger)
    with notes.carrying({NOTE: json.dumps({"pages": "two"})}):
        await t.handle(request())
    (dial,) = line.dials
    assert dial.first_page == 1
    assert ledger.jobs["fax_1"].state is JobState.SENT
