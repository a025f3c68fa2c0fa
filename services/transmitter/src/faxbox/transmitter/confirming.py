"""The pages the far end confirmed, written to the job as each is confirmed.

spandsp tells the call's session of each confirmation (MCF) from inside its callback,
where nothing may wait: ``PageConfirmations.confirmed`` keeps the count, and a task of
its own writes it to the job at once (``JobLedger.confirm_pages``, the latest count
each time). So a worker that dies after the last confirmation, before the attempt's
outcome is recorded, leaves a job that says every page arrived: the next worker ends it
as sent without another call, and a redial after a cut call sends only the pages after
the confirmed ones. ``flush`` at the end of the call writes what is still unwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from faxbox.transmitter.jobs import ConfirmingCall, JobLedger

log = logging.getLogger(__name__)

RETRY_S = 0.5


class PageConfirmations:
    """One call's confirmations; ``before`` pages of the document were confirmed by
    earlier calls. ``on_written(pages)`` is told each count once it is in the job."""

    def __init__(
        self,
        ledger: JobLedger,
        fax_id: str,
        worker_id: str,
        call: ConfirmingCall,
        *,
        before: int,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.fax_id = fax_id
        self.worker_id = worker_id
        self.call = call
        self.before = before
        self.on_written = on_written
        self._latest = 0
        self._written = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Held for each write to the job, ours and the lease renewals': FerretDB writes
        # back the whole document a conditional write read, so two at once could undo one.
        self.job_writes = asyncio.Lock()

    def confirmed(self, pages: int) -> None:
        """The line's hook: ``pages`` of this call are confirmed (never waits or raises)."""
        if pages > self._latest:
            self._latest = pages
            self._wake.set()

    async def __aenter__(self) -> PageConfirmations:
        self._task = asyncio.create_task(self._writing())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def flush(self) -> None:
        """Write the last count if it is not written yet; a failure is only logged (the
        attempt's outcome carries the count too)."""
        try:
            await self._write()
        except Exception:
            log.warning("could not write the confirmed pages at the end of the call", exc_info=True)

    async def _writing(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._write()
            except Exception:
                log.warning("could not write the confirmed pages; retrying", exc_info=True)
                self._wake.set()
                await asyncio.sleep(RETRY_S)

    async def _write(self) -> None:
        pages = self._latest
        if pages <= self._written:
            return
        total = self.before + pages
        async with self.job_writes:
            ours = await self.ledger.confirm_pages(self.fax_id, self.worker_id, total, self.call)
        if not ours:
            log.warning("the job is no longer ours; its confirmed pages were not written")
        self._written = pages
        if self.on_written is not None:
            self.on_written(total)
