"""The lease keeper beside a call stops when the call is over, even when it swallowed its
cancellation (on Python 3.11 an ``asyncio.timeout`` expiring at the moment of a cancel
turns it into a ``TimeoutError``; the keeper's look for a cancel suppresses errors)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest

from faxbox.shared.contracts import FaxSent
from faxbox.transmitter.jobs import JobState
from tests.unit.transmitter.transmitter_fakes import (
    FakeCancellations,
    FakeLedger,
    FakeLine,
    request,
    sent_report,
    transmitter,
)

# Before the fix the handler never returned (the keeper renewed the lease forever).
pytestmark = pytest.mark.timeout(30)


class SwallowingCancellations(FakeCancellations):
    """A cancellation port whose read, when cancelled, raises an error instead."""

    def __init__(self) -> None:
        super().__init__()
        self.swallowed = 0

    async def requested_at(self, fax_id: str) -> datetime | None:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            self.swallowed += 1
            raise TimeoutError("the timeout expired as the cancel came") from None
        return await super().requested_at(fax_id)


async def test_a_keeper_that_swallowed_its_cancel_still_lets_the_fax_end(tmp_path: Path) -> None:
    cancellations, ledger = SwallowingCancellations(), FakeLedger()

    async def call_ending_during_a_look(_dial: object) -> object:
        await asyncio.sleep(0.12)  # the keeper is mid-look when the call ends
        return sent_report(2)

    tx = transmitter(
        tmp_path,
        FakeLine(call_ending_during_a_look),
        cancellations=cancellations,
        cancel_poll_s=0.1,
        ledger=ledger,
    )
    await asyncio.wait_for(tx.handle(request()), 10)
    assert cancellations.swallowed >= 1
    assert ledger.jobs["fax_1"].state is JobState.SENT
    (sent,) = tx.bus.of(FaxSent)
    assert sent.calls == 1
