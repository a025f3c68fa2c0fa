"""The transmitter's header line, call announcements, page reports, partly sent faxes and
cancels, against fakes of its own ports."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from PIL import Image

from faxbox.render import strip_rows
from faxbox.shared.bus import RetryLater
from faxbox.shared.contracts import (
    FailureClass,
    FailureReason,
    FaxAttemptFailed,
    FaxAttemptStarted,
    FaxCancelRequested,
    FaxFailed,
    FaxSent,
)
from faxbox.shared.testing import MemoryPublisher
from faxbox.transmitter.jobs import JobState
from faxbox.transmitter.line import CallReport, Dial
from tests.unit.transmitter.transmitter_fakes import (
    Clock,
    FakeCancellations,
    FakeDocuments,
    FakeLedger,
    FakeLine,
    failed_report,
    page,
    request,
    sent_report,
    transmitter,
)


def heights(tiff: bytes) -> list[int]:
    with Image.open(io.BytesIO(tiff)) as image:
        out = []
        for n in range(getattr(image, "n_frames", 1)):
            image.seek(n)
            out.append(image.size[1])
        return out


async def test_the_call_sends_the_document_with_our_header_line_and_keeps_what_it_sent(
    tmp_path: Path,
) -> None:
    seen: list[bytes] = []

    def sent(dial: Dial) -> CallReport:
        seen.append(dial.tiff.read_bytes())
        return dataclasses.replace(sent_report(), page_report=(page(1), page(2)))

    t = transmitter(tmp_path, FakeLine(sent))
    await t.handle(request(settings={"header_name": "ACME", "timezone": "Europe/Berlin"}))
    (on_the_line,) = seen
    assert heights(on_the_line) == [200 + strip_rows(196)]  # the fake document's one page
    with Image.open(io.BytesIO(on_the_line)) as image:
        strip = np.asarray(image.convert("L"))[: strip_rows(196)]
    assert (strip < 128).any(), "no header line drawn"
    documents = cast(FakeDocuments, t.deps.documents)
    assert documents.transmitted[("fax_1", 1)] == on_the_line
    (fax_sent,) = t.bus.of(FaxSent)
    assert [p.page for p in fax_sent.page_report] == [1, 2]


async def test_each_call_is_announced_before_it_is_placed(tmp_path: Path) -> None:
    bus = MemoryPublisher()
    announced: list[int] = []

    def call(dial: Dial) -> CallReport:
        announced.extend(m.attempt for m in bus.of(FaxAttemptStarted))
        return failed_report("line", -486, sip=486)

    t = transmitter(tmp_path, FakeLine(call, sent_report()), bus=bus)
    with pytest.raises(RetryLater):
        await t.handle(request())
    assert announced == [1]
    (started,) = bus.of(FaxAttemptStarted)
    assert (started.carrier_id, started.destination, started.pages_total) == (
        "car_c1",
        "+12125550100",
        2,
    )
    assert started.caller_id == "+12125550199"


async def test_a_fax_that_ends_with_some_pages_confirmed_is_partly_sent(tmp_path: Path) -> None:
    report = dataclasses.replace(
        failed_report("line", 49, pages=1, retryable=False), page_report=(page(1), page(2, False))
    )
    t = transmitter(tmp_path, FakeLine(report))
    await t.handle(request())
    (failed,) = t.bus.of(FaxFailed)
    assert failed.partial
    assert (failed.pages_sent, failed.pages_total) == (1, 2)
    assert [p.confirmed for p in failed.page_report] == [True, False]
    assert failed.transmitted_tiff is not None  # what the far end has, header and all
    (attempt,) = t.bus.of(FaxAttemptFailed)
    assert attempt.page_report == failed.page_report


async def test_a_fax_cancelled_before_its_call_is_never_dialled(tmp_path: Path) -> None:
    cancellations = FakeCancellations()
    cancellations.requested["fax_1"] = Clock().now
    line = FakeLine()
    t = transmitter(tmp_path, line, cancellations=cancellations)
    await t.handle(request())
    assert line.dials == []
    (failed,) = t.bus.of(FaxFailed)
    assert failed.failure.failure_class is FailureClass.cancelled
    assert failed.failure.reason is FailureReason.cancelled
    assert (failed.attempts, failed.pages_sent) == (0, 0)
    assert not t.bus.of(FaxAttemptStarted)


async def test_a_fax_cancelled_during_its_call_is_hung_up_with_what_was_confirmed(
    tmp_path: Path,
) -> None:
    cancellations = FakeCancellations()
    hung_up = asyncio.Event()

    async def long_call(dial: Dial) -> CallReport:
        cancellations.requested["fax_1"] = Clock().now  # the sender cancels mid-call
        await asyncio.wait_for(dial.stop.wait(), 5)
        hung_up.set()
        return dataclasses.replace(failed_report("line", 49, pages=1), page_report=(page(1),))

    t = transmitter(tmp_path, FakeLine(long_call), cancellations=cancellations, cancel_poll_s=0.05)
    await asyncio.wait_for(t.handle(request()), 10)
    assert hung_up.is_set()
    (failed,) = t.bus.of(FaxFailed)
    assert failed.failure.reason is FailureReason.cancelled
    assert "during the call" in failed.failure.text
    assert (failed.attempts, failed.pages_sent) == (1, 1)
    assert [p.page for p in failed.page_report] == [1]
    assert cast(FakeLedger, t.deps.ledger).jobs["fax_1"].state is JobState.FAILED


async def test_a_cancel_between_calls_ends_the_fax_now(tmp_path: Path) -> None:
    clock = Clock()
    line = FakeLine(dataclasses.replace(failed_report("line", 49, pages=1), page_report=(page(1),)))
    t = transmitter(tmp_path, line, clock=clock)
    message = request()
    with pytest.raises(RetryLater):
        await t.handle(message)
    cancel = FaxCancelRequested(fax_id="fax_1", account_id="acc1", month="202611", user_id="usr1")
    await t.cancel(cancel)
    bus = t.bus
    (failed,) = bus.of(FaxFailed)
    assert failed.failure.reason is FailureReason.cancelled
    assert (failed.attempts, failed.pages_sent) == (1, 1)  # the last call's page
    assert [p.page for p in failed.page_report] == [1]
    # The request comes back from its retry queue: over, the same outcome once more.
    clock.advance(600)
    await t.handle(message)
    assert len(line.dials) == 1
    assert [m.message_id for m in bus.of(FaxFailed)] == [failed.message_id] * 2


async def test_a_cancel_leaves_calls_and_unknown_faxes_alone(tmp_path: Path) -> None:
    t = transmitter(tmp_path, FakeLine())
    cancel = FaxCancelRequested(fax_id="fax_1", account_id="acc1", month="202611", user_id="usr1")
    await t.cancel(cancel)  # not here yet: the request looks it up when it comes
    ledger = cast(FakeLedger, t.deps.ledger)
    await ledger.ensure("fax_1", Clock().now, request().model_dump_json())
    await ledger.claim("fax_1", "other-worker", Clock().now, 60)  # on the line elsewhere
    await t.cancel(cancel)
    assert ledger.jobs["fax_1"].state is JobState.IN_CALL
    assert t.bus.published == []
