"""The pages the far end confirmed, written to the job as each is confirmed.

spandsp tells the call's session of each confirmation (MCF) from inside its callback,
where nothing may wait: ``PageConfirmations.confirmed`` keeps the count, and a task of
its own writes it to the job at once (``JobLedger.confirm_pages``, the latest count
each time). So a worker that dies after the last confirmation, before the attempt's
outcome is recorded, leaves a job that says every page arrived: the next worker ends it
as sent without another call, and a redial after a cut call sends only the pages after
the confirmed ones. ``flush`` at the end of the call writes what is still unwritten.

When the database is away, the count cannot be written: at the end of such a call the
worker hands the job back to the broker with the count as a note (``note``, read back
by :func:`carried_pages`; see :mod:`faxbox.shared.notes`) instead of holding it while it
waits for the database. A worker killed during a long outage would otherwise leave a job
whose confirmed pages nobody knows, and the next worker would send them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from faxbox.transmitter import stopping
from faxbox.transmitter.jobs import ConfirmingCall, JobLedger

log = logging.getLogger(__name__)

RETRY_S = 0.5
# How long the end of a call waits for the last count to be written before it takes the
# database for away (a write takes milliseconds when it answers).
FLUSH_S = 2.0
NOTE = "pages-confirmed"


@dataclass(frozen=True, slots=True)
class CarriedPages:
    """Pages of the document confirmed by ``call``, as a handed-back job carries them."""

    pages: int
    call: ConfirmingCall


def carried_pages(notes: Mapping[str, str]) -> CarriedPages | None:
    """The confirmed pages a delivery carries, if any (a malformed note is ignored)."""
    raw = notes.get(NOTE)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        call = ConfirmingCall(
            attempt=int(doc["attempt"]),
            carrier_id=str(doc["carrier_id"]),
            first_page=int(doc["first_page"]),
            stamped_at=datetime.fromisoformat(doc["stamped_at"]),
        )
        return CarriedPages(int(doc["pages"]), call)
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring a malformed %s note: %r", NOTE, raw)
        return None


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
        self._failing = False  # the last write raised
        self._closing = False  # the call is over: the writer stops, never retries
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
        self._closing = True
        if self._task is not None and not await _stopped(self._task):
            # A write the database driver would not let go of (it turned our cancel into
            # its own timeout error, seconds later): leave it to end by itself, and treat
            # the count as unwritten, so the job is handed back with it now. (Waiting
            # instead held the job, its count in memory only, until the process was
            # killed minutes later, and the fax was dialled again: long chaos, seed 868123.)
            self._failing = True
        await self.flush()

    @property
    def unwritten(self) -> bool:
        """Pages were confirmed that the job does not know of."""
        return self._latest > self._written

    def note(self) -> dict[str, str]:
        """The count the job does not know of, as the note a handed-back job carries."""
        doc = {"pages": self.before + self._latest, **self.call.doc()}
        doc["stamped_at"] = self.call.stamped_at.isoformat()
        return {NOTE: json.dumps(doc)}

    async def flush(self) -> None:
        """Write the last count if it is not written yet, waiting at most ``FLUSH_S``
        (not at all when the writes fail already); a failure is only logged
        (``unwritten`` says so)."""
        if self._failing:
            return
        try:
            async with asyncio.timeout(FLUSH_S):
                await self._write()
        except Exception:
            log.warning("could not write the confirmed pages at the end of the call", exc_info=True)

    async def _writing(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._write()
                self._failing = False
            except Exception:
                self._failing = True
                if self._closing:
                    return
                log.warning("could not write the confirmed pages; retrying", exc_info=True)
                self._wake.set()
                await asyncio.sleep(RETRY_S)

    async def _write(self) -> None:
        pages = self._latest
        if pages <= self._written:
            return
        total = self.before + pages
        async with self.job_writes:
            ours = await self.ledger.confirm_pages(
                self.fax_id, self.worker_id, self.call.attempt, total, self.call
            )
        if not ours:
            log.warning("the job is no longer ours; its confirmed pages were not written")
        self._written = pages
        if self.on_written is not None:
            self.on_written(total)


async def _stopped(writer: asyncio.Task[None]) -> bool:
    """Whether the writer ended within ``FLUSH_S`` of being told to."""
    if not await stopping.stop(writer, within_s=FLUSH_S):
        return False
    if not writer.cancelled():
        with contextlib.suppress(Exception):
            writer.result()  # retrieved: it was logged where it was raised
    return True
