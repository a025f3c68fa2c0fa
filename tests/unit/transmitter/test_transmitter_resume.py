"""Redials resume: confirmed pages are written as each is confirmed, the next call sends
only the pages after them (numbered in the whole document), and a job whose every page
was confirmed ends as sent without a call."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
from PIL import Image

from faxbox.render import strip_rows
from faxbox.shared.bus import RetryLater
from faxbox.shared.contracts import FaxAttemptFailed, FaxSent
from faxbox.transmitter.jobs import ConfirmingCall, JobState
from faxbox.transmitter.line import CallReport, Dial
from tests.unit.transmitter.transmitter_fakes import (
    Clock,
    FakeDocuments,
    FakeLedger,
    FakeLine,
    failed_report,
    page,
    request,
    sent_report,
    transmitter,
)


def pages_of(path: Path) -> list[bytes]:
    with Image.open(path) as image:
        out = []
        for n in range(getattr(image, "n_frames", 1)):
            image.seek(n)
            out.append(image.convert("1").tobytes())
        return out


def confirming(pages: int, report: CallReport, seen: list[list[bytes]]):  # type: ignore[no-untyped-def]
    """A call that has ``pages`` confirmed one by one, then ends with ``report``."""

    async def call(dial: Dial) -> CallReport:
        seen.append(pages_of(dial.tiff))
        assert dial.on_page_confirmed is not None
        for n in range(1, pages + 1):
            dial.on_page_confirmed(n)
            await asyncio.sleep(0.01)  # the writer's turn, as during a real call
        return report

    return call


async def test_a_cut_call_is_resumed_after_its_confirmed_pages(tmp_path: Path) -> None:
    clock, ledger = Clock(), FakeLedger()
    seen: list[list[bytes]] = []
    cut = dataclasses.replace(
        failed_report("line", 21, pages=2), page_report=(page(1), page(2), page(3, False))
    )
    rest = dataclasses.replace(sent_report(3), page_report=(page(3), page(4), page(5)))
    line = FakeLine(confirming(2, cut, seen), confirming(3, rest, seen))
    t = transmitter(tmp_path, line, clock=clock, ledger=ledger)
    five = request("five", pages=5)
    with pytest.raises(RetryLater) as later:
        await t.handle(five)
    # Written as each page was confirmed, not only when the call ended.
    assert ledger.confirmed_writes == [1, 2]
    assert ledger.jobs["fax_1"].pages_confirmed == 2
    (failed,) = t.bus.of(FaxAttemptFailed)
    assert failed.pages_sent == 2
    clock.advance(later.value.delay_s)
    await t.handle(five)

    first, redial = line.dials
    assert (first.first_page, first.pages_total) == (1, 5)
    assert (redial.first_page, redial.pages_total) == (3, 3)
    whole, tail = seen
    assert len(whole) == 5
    # The same pages 3-5 (below the header line, whose time is the redial's).
    header = strip_rows(196) * 1728 // 8
    assert [page[header:] for page in tail] == [page[header:] for page in whole[2:]]
    assert len({page[header:] for page in whole}) == 5
    (sent,) = t.bus.of(FaxSent)
    assert (sent.attempts, sent.calls) == (2, 2)
    assert (sent.statistics.pages_transferred, sent.statistics.pages_total) == (5, 5)
    # Every page, as reported by the call that delivered it.
    assert sent.page_report == (page(1), page(2), page(3), page(4), page(5))
    assert ledger.confirmed_writes == [1, 2, 3, 4, 5]
    assert ledger.jobs["fax_1"].calls == 2


async def test_a_fax_sent_in_one_call_was_carried_by_one(tmp_path: Path) -> None:
    line = FakeLine(confirming(2, sent_report(2), []))
    t = transmitter(tmp_path, line)
    await t.handle(request())
    (sent,) = t.bus.of(FaxSent)
    assert (sent.attempts, sent.calls) == (1, 1)


async def test_every_page_confirmed_before_the_worker_died_ends_as_sent_without_a_call(
    tmp_path: Path,
) -> None:
    clock, ledger = Clock(), FakeLedger()
    stamped_at = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    # Worker w0 had the last page confirmed, wrote it, and died before the outcome.
    await ledger.ensure("fax_1", clock())
    await ledger.claim("fax_1", "w0", clock(), 60)
    await ledger.confirm_pages("fax_1", "w0", 1, 5, ConfirmingCall(1, "car_c1", 1, stamped_at))
    line = FakeLine()
    t = transmitter(tmp_path, line, clock=clock, ledger=ledger)
    clock.advance(61)
    await t.handle(request("five", pages=5))

    assert not line.dials
    assert ledger.jobs["fax_1"].state is JobState.SENT
    (sent,) = t.bus.of(FaxSent)
    assert (sent.attempts, sent.calls, sent.carrier_id) == (1, 1, "car_c1")
    assert sent.statistics.pages_transferred == 5
    # What that call sent is kept under its attempt: the whole document, headed.
    documents = cast(FakeDocuments, t.deps.documents)
    with Image.open(io.BytesIO(documents.transmitted[("fax_1", 1)])) as image:
        assert getattr(image, "n_frames", 1) == 5
    assert not t.bus.of(FaxAttemptFailed)


async def test_a_call_ending_badly_after_the_last_page_was_confirmed_is_sent(
    tmp_path: Path,
) -> None:
    # The far end confirmed both pages, then the call ended without a clean DCN.
    ragged = dataclasses.replace(sent_report(2), failure=failed_report("line", 21).failure)
    line = FakeLine(confirming(2, ragged, []))
    t = transmitter(tmp_path, line)
    await t.handle(request())
    (sent,) = t.bus.of(FaxSent)
    assert (sent.attempts, sent.calls, sent.statistics.pages_transferred) == (1, 1, 2)
    assert not t.bus.of(FaxAttemptFailed)
