"""One inbound call: decide whether to answer, receive the fax, store it, announce it.

- the called number must be assigned to a faxbox (else 404) that is enabled (else
  480); when every line of this process is taken, 486. The number is looked for in the
  Request-URI first, then in To (behind a registrar the Request-URI is our contact and
  the number dialled is in To), each read with the rules numbers are assigned with
  (``numbers.called_number_keys``: 10-digit NANP, a leading 1, E.164 with or without +);
- each answered call gets its own fax id; its month is the month of the call;
- whatever pages arrived are stored (TIFF as received, and a PDF) and announced: a
  complete fax as ``InboundFaxReceived``, anything else as ``InboundFaxFailed`` with
  the pages that did arrive as ``partial_pdf``.

The announcement is a decision of the receiver's outbox under the fax id
(``faxbox.shared.outbox``), recorded right after storing the pages and returned; the
runtime publishes it, and a sweep does if the broker was away.

The database being down never loses a fax: before a call is answered, a lookup that
fails for the outage refuses it with 503 and Retry-After (a carrier tries again later
or elsewhere); once answered, pages that cannot be stored are kept on disk and stored
when the database answers (``pending``).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypedDict

from faxbox.fax.line import LineSettings, receive
from faxbox.fax.line.contract import fax_failure, page_report, transfer_statistics
from faxbox.fax.outcome import FaxOutcome, PageStats
from faxbox.fax.session import CallSettings
from faxbox.fax.sip.dialog import CallEnded
from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.tiffcheck import count_pages
from faxbox.inbound import metrics
from faxbox.inbound.pdf import tiff_to_pdf
from faxbox.inbound.pending import Pending, PendingSpool, Reception
from faxbox.inbound.ports import NumberDirectory
from faxbox.inbound.receiving import DOCUMENT_END, AnsweredCall, Receiving, ReceivingSpool
from faxbox.shared import crashpoints
from faxbox.shared.contracts import (
    DocumentRef,
    FailureClass,
    FailureReason,
    FaxFailure,
    InboundFaxFailed,
    InboundFaxReceived,
    Message,
    month_of,
)
from faxbox.shared.logs import fax_context
from faxbox.shared.numbers import called_number_keys
from faxbox.shared.outbox import Decided, DecisionStore, Recorded
from faxbox.shared.policy import is_infrastructure
from faxbox.shared.ports import Documents
from faxbox.shared.store import Account, Faxbox, new_id

log = logging.getLogger(__name__)

CODE_NOTHING_STORED = -5


@dataclass(frozen=True)
class Deps:
    directory: NumberDirectory
    documents: Documents
    decisions: DecisionStore
    calls: asyncio.Semaphore
    max_call_s: float = 1800.0  # call time
    media_silence_s: float = 60.0  # call time without any media before we hang up
    spool_dir: Path | None = None
    # The database down before we answer: how long to look a number up, then 503 with this.
    lookup_timeout_s: float = 5.0
    outage_retry_after_s: int = 30
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    new_fax_id: Callable[[], str] = lambda: new_id("fax")
    crash_at: str | None = None  # TEST HOOK: FAXBOX_TEST_CRASH_AT (faxbox.shared.crashpoints)

    @property
    def spool(self) -> Path:
        return self.spool_dir or Path(tempfile.gettempdir()) / "faxbox-inbound"

    @property
    def pending(self) -> PendingSpool:
        return PendingSpool(self.spool)

    @property
    def receiving(self) -> ReceivingSpool:
        return ReceivingSpool(self.spool)


async def _lookup(deps: Deps, numbers_called: list[str]) -> tuple[str, Faxbox, Account] | None:
    for raw in numbers_called:
        for key in called_number_keys(raw):
            found = await deps.directory.faxbox_for_number(key)
            if found is not None:
                return (key, *found)
    return None


async def handle_call(incoming: IncomingCall, deps: Deps) -> Recorded | None:
    called = incoming.to_number
    caller = incoming.from_number
    try:
        async with asyncio.timeout(deps.lookup_timeout_s):
            found = await _lookup(deps, incoming.called_numbers)
    except Exception as exc:
        if not is_infrastructure(exc):
            raise
        await refuse_for_outage(incoming, deps.outage_retry_after_s, exc)
        return None
    if found is None:
        log.info("call from %s to unassigned number %s: 404", caller, called)
        metrics.CALLS_REFUSED.labels("404").inc()
        await incoming.reject(404)
        return None
    called, faxbox, account = found
    if not faxbox.enabled:
        log.info("call from %s to %s: faxbox %s is disabled: 480", caller, called, faxbox.id)
        metrics.CALLS_REFUSED.labels("480").inc()
        await incoming.reject(480)
        return None
    if deps.calls.locked():
        metrics.CALLS_REFUSED.labels("486").inc()
        await incoming.reject(486, "All Lines Busy")
        return None
    async with deps.calls:
        fax_id = deps.new_fax_id()
        with fax_context(fax_id):
            return await _receive(incoming, deps, faxbox, account, fax_id, caller, called)


async def _receive(
    incoming: IncomingCall,
    deps: Deps,
    faxbox: Faxbox,
    account: Account,
    fax_id: str,
    caller: str,
    called: str,
) -> Recorded | None:
    month = month_of(deps.clock())
    incoming.ring()
    try:
        call = await incoming.answer()
    except CallEnded:
        log.info("caller %s gave up before we answered", caller)
        return None
    log.info("answered %s → %s for faxbox %s", caller, called, faxbox.id)
    metrics.CALLS_IN_PROGRESS.inc()
    answered = AnsweredCall(
        fax_id=fax_id,
        account_id=account.id,
        faxbox_id=faxbox.id,
        owner_user_id=faxbox.owner_user_id,
        month=month,
        caller=caller,
        called=called,
        answered_at=deps.clock(),
    )
    # On disk from here on: a process that dies mid-call leaves what it was told
    # (``receiving``), and the next one stores it.
    receiving = await asyncio.to_thread(deps.receiving.start, answered)
    try:
        settings = CallSettings(
            file=receiving.pages,
            local_identity=(faxbox.identity or called)[:20],
            ecm=True,
        )
        line = LineSettings(silence_s=deps.media_silence_s, max_call_s=deps.max_call_s)
        result = await receive(
            call, settings, line, name=fax_id, on_page_received=partial(_noted, receiving, deps)
        )
        reception = receiving.reception(result.duration_s, result.fax)
        try:
            return await deps.decisions.record(await _conclude(deps, reception, receiving.pages))
        except Exception:
            # The pages exist only in this file, and the call cannot be asked again.
            log.exception("could not store or announce the fax; keeping it on disk")
            await asyncio.to_thread(deps.pending.keep, reception, receiving.pages)
            metrics.PENDING.inc()
    finally:
        await asyncio.to_thread(receiving.close)
        metrics.CALLS_IN_PROGRESS.dec()
    return None


def _noted(receiving: Receiving, deps: Deps, page: PageStats, remote_id: str) -> None:
    """A page ended: noted on disk before its confirmation goes to the sender."""
    receiving.page_received(page, remote_id)
    if page.result in DOCUMENT_END and crashpoints.armed(
        deps.crash_at, "inbound", "after_last_page"
    ):
        crashpoints.crash("inbound", "after_last_page")


async def refuse_for_outage(incoming: IncomingCall, retry_after_s: int, exc: BaseException) -> None:
    """The database cannot say whether or where to take the call: refuse it so that the
    carrier tries again later (Retry-After) or elsewhere, rather than answer a fax we
    might not be able to keep."""
    log.warning(
        "call from %s to %s refused with 503 while the database is unavailable: %s",
        incoming.from_number,
        incoming.to_number,
        f"{type(exc).__name__}: {exc}".splitlines()[0][:200],
    )
    metrics.CALLS_REFUSED.labels("503").inc()
    await incoming.reject(503, "Service Unavailable", (("Retry-After", str(retry_after_s)),))


async def store_pending(deps: Deps) -> list[Recorded]:
    """Store and record every fax kept on disk, oldest first; the decisions to publish.

    Stops at the first failure (the database is still down: the caller waits)."""
    recorded: list[Recorded] = []
    for pending in await asyncio.to_thread(deps.pending.all):
        with fax_context(pending.reception.fax_id):
            recorded.append(await _store_one(deps, pending))
            await asyncio.to_thread(deps.pending.done, pending.reception.fax_id)
            log.info("fax kept during the outage is stored and announced")
    return recorded


async def _store_one(deps: Deps, pending: Pending) -> Recorded:
    # Recorded before a crash that left the entry behind: its documents are stored.
    earlier = await deps.decisions.get(pending.reception.fax_id)
    if earlier is not None:
        return earlier
    return await deps.decisions.record(await _conclude(deps, pending.reception, pending.pages))


class _CallFields(TypedDict):
    """What both announcements of a call say about it, whatever became of the fax."""

    fax_id: str
    account_id: str
    month: str
    faxbox_id: str
    user_id: str
    caller_number: str
    called_number: str


async def _conclude(deps: Deps, reception: Reception, path: Path) -> Decided:
    fax_id, month, outcome = reception.fax_id, reception.month, reception.outcome
    caller, called, account_id = reception.caller, reception.called, reception.account_id
    pages = outcome.pages_transferred
    data, in_file = await asyncio.to_thread(_read_received, path)
    tiff_ref: DocumentRef | None = None
    pdf_ref: DocumentRef | None = None
    if pages > 0 and in_file > 0:

        async def store(
            content: bytes, role: str, extension: str, content_type: str
        ) -> DocumentRef:
            """One form of the received fax (stored once per fax and ``role``)."""
            return await deps.documents.put(
                account_id,
                month,
                content,
                filename=f"fax-{fax_id}.{extension}",
                content_type=content_type,
                metadata={
                    "fax_id": fax_id,
                    "faxbox_id": reception.faxbox_id,
                    "caller": caller,
                    "role": role,
                },
            )

        tiff_ref = await store(data, "received_tiff", "tif", "image/tiff")
        pdf = await asyncio.to_thread(tiff_to_pdf, path, outcome.y_resolution)
        pdf_ref = await store(pdf, "received_pdf", "pdf", "application/pdf")
        metrics.PAGES_RECEIVED.inc(pages)
    statistics = transfer_statistics(outcome, pages_total=pages, duration_s=reception.duration_s)
    call = _CallFields(
        fax_id=fax_id,
        account_id=account_id,
        month=month,
        faxbox_id=reception.faxbox_id,
        user_id=reception.owner_user_id,
        caller_number=caller,
        called_number=called,
    )
    event: Message
    if outcome.success and tiff_ref is not None and pdf_ref is not None:
        event = InboundFaxReceived(
            **call,
            statistics=statistics,
            tiff=tiff_ref,
            pdf=pdf_ref,
            page_report=page_report(outcome),
        )
        metrics.OUTCOMES.labels("received", "").inc()
        log.info("received %d page(s) from %r", pages, outcome.remote_id)
    else:
        failure = _failure(outcome)
        event = InboundFaxFailed(
            **call,
            failure=failure,
            pages_received=pages if pdf_ref else 0,
            partial_pdf=pdf_ref,
            page_report=page_report(outcome),
        )
        metrics.OUTCOMES.labels("failed", failure.failure_class.value).inc()
        log.info("reception failed after %d page(s): %s", pages, failure.text)
    return Decided(fax_id, (event,))


def _read_received(path: Path) -> tuple[bytes, int]:
    if not path.exists():
        return b"", 0
    return path.read_bytes(), count_pages(path)


def _failure(outcome: FaxOutcome) -> FaxFailure:
    failure = fax_failure(outcome)
    if failure is None:  # T.30 finished, yet nothing could be stored
        return FaxFailure(
            failure_class=FailureClass.protocol,
            code=CODE_NOTHING_STORED,
            text="The fax ended without a page we could read.",
            reason=FailureReason.protocol_error,
        )
    return failure
