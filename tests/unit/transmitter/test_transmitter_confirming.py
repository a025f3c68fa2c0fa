"""The end of a call does not wait on a count write the database driver will not let go.

The driver seen in the long chaos (a database killed mid-write) turned our cancel into
its own error seconds later; the writer then retried, and the end of the call waited on
it for minutes with the confirmed count in memory only.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from faxbox.transmitter.confirming import FLUSH_S, PageConfirmations
from faxbox.transmitter.jobs import ConfirmingCall
from tests.unit.transmitter.transmitter_fakes import FakeLedger


class SwallowingLedger(FakeLedger):
    """Each count write hangs on a database that is away; a cancel is swallowed and
    comes out, seconds later, as the driver's own timeout."""

    def __init__(self, hang_s: float) -> None:
        super().__init__()
        self.hang_s = hang_s
        self.writes_started = 0

    async def confirm_pages(
        self, fax_id: str, worker_id: str, attempt: int, pages: int, call: ConfirmingCall
    ) -> bool:
        self.writes_started += 1
        deadline = time.monotonic() + self.hang_s
        while time.monotonic() < deadline:
            try:
                await asyncio.sleep(deadline - time.monotonic())
            except asyncio.CancelledError:
                continue  # swallowed, as the driver did
        raise TimeoutError("server selection timed out")


async def test_the_call_ends_with_its_count_unwritten_instead_of_waiting() -> None:
    ledger = SwallowingLedger(hang_s=4 * FLUSH_S)
    call = ConfirmingCall(1, "car_1", 1, datetime.now(UTC))
    confirmations = PageConfirmations(ledger, "fax_1", "w1", call, before=0)
    started = time.monotonic()
    async with confirmations:
        confirmations.confirmed(2)
        await asyncio.sleep(0.1)  # the writer is in its write
    took = time.monotonic() - started
    assert took < FLUSH_S + 1, took
    assert confirmations.unwritten
    assert confirmations.note()["pages-confirmed"].startswith('{"pages": 2')
    # The abandoned write ends by itself, and no other write follows it.
    await asyncio.sleep(4 * FLUSH_S)
    assert ledger.writes_started == 1


async def test_a_writer_that_lets_go_is_waited_for_and_the_count_flushed() -> None:
    ledger = FakeLedger()
    call = ConfirmingCall(1, "car_1", 1, datetime.now(UTC))
    # The fake knows no such job: the write answers "not ours", and ends.
    confirmations = PageConfirmations(ledger, "fax_1", "w1", call, before=0)
    async with confirmations:
        confirmations.confirmed(1)
    assert not confirmations.unwritten
