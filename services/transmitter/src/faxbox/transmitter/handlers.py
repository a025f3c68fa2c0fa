"""Handling one ``OutboundFaxRequested``: claim, check, choose a carrier, call, conclude.

Each attempt's outcome is a decision under the key ``<fax_id>#<attempt>``
(``FaxAttemptFailed``, ``FaxSent``, or ``FaxAttemptFailed`` then ``FaxFailed``). The
handler records it (``faxbox.shared.outbox``) before it ends the attempt in the job
ledger, since a call that is over must never be made again, and returns it; the runtime
publishes it. Settling rules (see docs/architecture.md, transmitter):

- already ``sent``/``failed`` → ack, the last attempt's recorded outcome published
  again (same message ids): the earlier publish may not have been confirmed;
- ``in_call`` on a live lease → ``RetryLater`` until the lease ends: never acked away
  (that worker may die), never dialled (it is on the line);
- ``in_call`` on a lease that ran out: if that attempt's outcome was recorded (its worker
  died before ending the attempt), the job ends as recorded; otherwise the worker died
  on the line and a new attempt is made;
- ``waiting_retry`` before its time (a duplicate copy) → ``RetryLater`` until then, with
  the previous attempt's outcome if it is still owed to the bus;
- otherwise claim it (atomic, with our lease) and make one attempt.

An attempt tries the eligible carriers in order: when one fails before the far end is
reached (5xx, 408, timeout, no connection, 503 with Retry-After), the next carrier with
a free channel takes the call at once, ``max_carrier_tries`` carriers at most. Each
carrier that failed over is a ``FaxAttemptFailed`` with ``carrier_failover`` in the
attempt's outcome, before its last message (the history's timeline shows every carrier
tried). A carrier that sent Retry-After is skipped until then. A failed attempt that may
be retried returns ``FaxAttemptFailed`` with a ``RetryLater(delay)``: once it is
published, the broker holds the message for the redial delay.

Each call is announced (``FaxAttemptStarted``) once a channel is held, just before
dialling: a decision of its own (``<fax_id>#<attempt>:started``), recorded and published
at once, and left to the outbox's sweep if the broker does not confirm it. The document
goes on the line with our header line drawn in (``transmitter.document``), and the TIFF
of the call that ends the fax is stored and named as ``transmitted_tiff``. Every call's
per-page report travels with its outcome; a fax whose last call had some pages
confirmed, not all, ends as partly sent (``FaxFailed.partial``).

Redials resume (as HylaFAX does): the pages the far end confirmed are written to the job
as each is confirmed (``transmitter.confirming``), and the next call sends only the pages
after them, each still numbered ``page x/y`` in the whole document. A job found with
every page confirmed (its worker died between the last confirmation and the attempt's
outcome) ends as sent without a call. When the database is away at the end of a call and
the count could not be written, the worker hands the job back to the broker with the
count as a note instead of waiting for the database with the message in hand; whoever
claims it next writes that count into the job before anything else. Outcomes count
pages in the whole document; ``FaxSent.calls`` says how many calls carried the fax.

Cancelled (``fax_cancellations``, see ``transmitter.cancelling``): a fax is looked up
there before each call and every ``cancel_poll_s`` while on the line; on the line, the
call is stopped where it is and hung up, and the fax ends as cancelled with what was
confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from faxbox.fax.tiffcheck import TiffRejected, check_tiff
from faxbox.shared import crashpoints, notes
from faxbox.shared.contracts import (
    FailureClass,
    FailureReason,
    FaxAttemptFailed,
    FaxAttemptStarted,
    FaxFailed,
    FaxFailure,
    FaxSent,
    Message,
    OutboundFaxRequested,
    PageReport,
    TransferStatistics,
)
from faxbox.shared.looplag import LoadGauge
from faxbox.shared.outbox import Decided, DecisionStore, Outbox, Recorded
from faxbox.shared.policy import RetryLater, is_infrastructure
from faxbox.shared.store import Carrier, NotFound
from faxbox.transmitter import metrics, stopping
from faxbox.transmitter.admission import CallsAdmitted, admit
from faxbox.transmitter.carriers import CarrierCooldown, Slot, eligible_carriers
from faxbox.transmitter.confirming import PageConfirmations, carried_pages
from faxbox.transmitter.document import stamped
from faxbox.transmitter.jobs import TERMINAL, ConfirmingCall, Finish, Job, JobLedger, JobState
from faxbox.transmitter.line import CallReport, Dial
from faxbox.transmitter.ports import (
    CancellationSource,
    CarrierSlots,
    CarrierSource,
    DocumentSource,
    FaxLine,
)

log = logging.getLogger(__name__)

# Internal failure codes are negative; SIP failures use -status (≤ -100).
CODE_BAD_DOCUMENT = -1
CODE_NO_DOCUMENT = -2
CODE_NO_RESOURCES = -3
CODE_INTERNAL = -4
CODE_CANCELLED = -5

# A call's announcement has the same message id however often it is made (a redelivered
# request resuming the same attempt): consumers see it once.
_STARTED = uuid.UUID("5b1e4c2a-7d3f-4e8a-9c6b-0f2d1a3e5c7b")

NO_RESOURCES = "no available resources"


def _of_the_fax(message: OutboundFaxRequested, *, owner: bool = True) -> dict[str, Any]:
    """The fields an event about the fax repeats from its request (``owner``: whose)."""
    fields: dict[str, Any] = {
        "fax_id": message.fax_id,
        "account_id": message.account_id,
        "month": message.month,
        "destination": message.destination,
    }
    if owner:
        fields |= {"user_id": message.user_id, "faxbox_id": message.faxbox_id}
    return fields


def utc_now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)  # BSON precision


@dataclass(frozen=True)
class Deps:
    ledger: JobLedger
    slots: CarrierSlots
    carriers: CarrierSource
    documents: DocumentSource
    line: FaxLine
    decisions: DecisionStore
    # Records and publishes at once what must be out before the handler ends (the call's
    # announcement); the attempt's outcome is returned for the runtime instead.
    outbox: Outbox
    cancellations: CancellationSource
    worker_id: str
    calls: asyncio.Semaphore  # max_calls
    lease_s: float = 60.0
    cancel_poll_s: float = 2.0
    busy_retry_s: int = 15
    busy_give_up_s: float = 1800.0
    spool_dir: Path | None = None
    clock: Callable[[], datetime] = utc_now
    max_carrier_tries: int = 3  # carriers one attempt may try (failover)
    cooldown: CarrierCooldown = field(default_factory=CarrierCooldown)
    load: LoadGauge | None = None  # admission control (transmitter.admission)
    overload_retry_s: int = 10
    overload_bound_ms: float | None = None  # None: the gauge's own
    admitted: CallsAdmitted = field(default_factory=CallsAdmitted)
    admit_calls: int | None = None  # None: no bound but max_calls (transmitter.admission)
    crash_at: str | None = None  # TEST HOOK: FAXBOX_TEST_CRASH_AT (faxbox.shared.crashpoints)


def _seconds_until(moment: datetime | None, now: datetime) -> int:
    if moment is None:
        return 1
    return max(1, math.ceil((moment - now).total_seconds()))


FINISH_TRIES = 25  # about ten minutes of backing off


def attempt_key(fax_id: str, attempt: int) -> str:
    """The idempotency key of one attempt's outcome."""
    return f"{fax_id}#{attempt}"


async def handle_outbound(message: OutboundFaxRequested, deps: Deps) -> Recorded | None:
    """Database or broker trouble propagates: the settling policy waits it out."""
    now = deps.clock()
    job = await deps.ledger.ensure(message.fax_id, now, message.model_dump_json())
    if job.state is JobState.IN_CALL and not job.lease_live(now):
        job = await _end_as_recorded(job, deps)
    if job.state in TERMINAL:
        return await _republish(job, deps)
    if job.state is JobState.IN_CALL and job.lease_live(now):
        raise RetryLater(
            f"fax is on the line with {job.worker_id}", _seconds_until(job.lease_until, now) + 1
        )
    if job.state is JobState.WAITING_RETRY and job.next_attempt_at and job.next_attempt_at > now:
        later = RetryLater("redial not due yet", _seconds_until(job.next_attempt_at, now))
        previous = await deps.decisions.get(attempt_key(job.fax_id, job.attempt))
        if previous is not None and previous.owed:
            return replace(previous, retry=later)
        raise later
    async with deps.calls:
        admit(
            deps.load,
            deps.overload_retry_s,
            deps.overload_bound_ms,
            admitted=deps.admitted,
            max_admitted=deps.admit_calls,
        )
        with deps.admitted.holding():
            now = deps.clock()
            claimed = await deps.ledger.claim(message.fax_id, deps.worker_id, now, deps.lease_s)
            if claimed is None:  # another copy got there first: look again shortly
                raise RetryLater("job changed while claiming it", 1)
            return await _attempt(message, await _with_carried_pages(claimed, deps), deps)


async def _with_carried_pages(job: Job, deps: Deps) -> Job:
    """The job, with the pages its delivery carries as confirmed written into it first."""
    carried = carried_pages(notes.carried())
    if carried is None or carried.pages <= job.pages_confirmed:
        return job
    log.warning(
        "the job came back with %d page(s) confirmed by attempt %d, unknown to the job "
        "(the database was away then); writing them",
        carried.pages,
        carried.call.attempt,
    )
    ours = await deps.ledger.confirm_pages(
        job.fax_id, deps.worker_id, job.attempt, carried.pages, carried.call
    )
    current = await deps.ledger.get(job.fax_id) if ours else None
    if current is None or current.attempt != job.attempt:
        raise RetryLater("job changed while writing its carried pages", 1)
    return current


async def _republish(job: Job, deps: Deps) -> Recorded | None:
    recorded = await deps.decisions.get(attempt_key(job.fax_id, job.attempt))
    if recorded is not None:
        names = ", ".join(type(m).__name__ for m in recorded.messages)
        log.info("job already %s; republishing its %s", job.state.value, names)
        metrics.REPUBLISHED.inc()
    return recorded


async def _end_as_recorded(job: Job, deps: Deps) -> Job:
    """A job whose worker died after recording its attempt's outcome ends as recorded."""
    recorded = await deps.decisions.get(attempt_key(job.fax_id, job.attempt))
    if recorded is None or job.worker_id is None:
        return job  # the worker died on the line: the next claim is a new attempt
    log.warning(
        "attempt %d ended before its worker could say so; ending it as recorded", job.attempt
    )
    await deps.ledger.finish(job.fax_id, job.worker_id, job.attempt, finish_of(job, recorded))
    return await deps.ledger.get(job.fax_id) or job


M = TypeVar("M", bound=Message)


def _first(messages: Sequence[Message], kind: type[M]) -> M | None:
    return next((m for m in messages if isinstance(m, kind)), None)


def _failover(message: Message) -> bool:
    return isinstance(message, FaxAttemptFailed) and message.carrier_failover


def finish_of(job: Job, recorded: Recorded) -> Finish:
    """How the job ends, read back from an attempt's recorded outcome."""
    sent = _first(recorded.messages, FaxSent)
    failed = _first(recorded.messages, FaxFailed)
    # The attempt's own failure, after any carrier it failed over from.
    attempt = _first([m for m in recorded.messages if not _failover(m)], FaxAttemptFailed)
    if sent is not None:
        return Finish(JobState.SENT, {"success": True, "carrier_id": sent.carrier_id})
    outcome: dict[str, Any] = {"success": False}
    if attempt is not None:
        outcome |= {
            "failure_class": attempt.failure.failure_class.value,
            "code": attempt.failure.code,
            "text": attempt.failure.text,
            "pages_sent": attempt.pages_sent,
            "carrier_id": attempt.carrier_id,
        }
    if failed is not None:
        return Finish(JobState.FAILED, outcome, failed=attempt is not None)
    assert attempt is not None
    protocol = attempt.failure.failure_class is FailureClass.protocol
    return Finish(
        JobState.WAITING_RETRY,
        outcome,
        next_attempt_at=attempt.next_attempt_at,
        failed=True,
        degrade=job.degrade + 1 if protocol else job.degrade,
    )


async def _attempt(message: OutboundFaxRequested, job: Job, deps: Deps) -> Recorded | None:
    with tempfile.TemporaryDirectory(prefix="faxbox-tx-", dir=deps.spool_dir) as tmp:
        path = Path(tmp) / "fax.tif"
        if 0 < message.pages <= job.pages_confirmed:
            return await _confirmed_before(message, job, deps, path)
        if await deps.cancellations.requested_at(message.fax_id) is not None:
            return await cancelled(message, job, deps, calls=job.attempt - 1)
        first_page = job.pages_confirmed + 1
        stamped_at = deps.clock()
        failure = await _load_document(message, path, deps, first_page, stamped_at)
        if failure is not None:
            return await _fail(message, job, failure, deps, pages_sent=0, calls=job.attempt - 1)
        carriers = eligible_carriers(
            await deps.carriers.list_carriers(flag="fax"), message.route_flags
        )
        if not carriers:
            return await _fail(
                message, job, _no_resources(), deps, pages_sent=0, calls=job.attempt - 1
            )
        holder = f"{deps.worker_id}:{job.fax_id}:{job.attempt}"
        tried: set[str] = set()
        failovers: list[FaxAttemptFailed] = []
        outcome: tuple[Carrier, CallReport] | None = None
        for _ in range(max(1, deps.max_carrier_tries)):
            now = deps.clock()
            candidates = _untried(carriers, tried, deps, now)
            if outcome is not None and not candidates:
                break
            slot = await deps.slots.acquire(candidates or carriers, holder, now, deps.lease_s)
            handing_back: RetryLater | None = None
            if slot is None:
                if outcome is None:
                    return await _all_busy(message, job, carriers, deps, now)
                failovers.pop()  # no other carrier has a free channel: the last failure stands
                break
            try:
                if not tried:  # one announcement per attempt, whichever carrier
                    await _announce(message, job, slot.carrier, deps)
                call = ConfirmingCall(job.attempt, slot.carrier.id, first_page, stamped_at)
                confirmations = _confirmations(message, job, call, deps)
                dial = _dial(message, job, slot, path, confirmations)
                try:
                    async with confirmations:
                        report = await _call_with_lease(
                            dial, job, slot, deps, confirmations.job_writes
                        )
                except RetryLater as lost_contact:
                    handing_back = _hand_back(confirmations, lost_contact, deps)
                    raise handing_back from None
                if report is not None and confirmations.unwritten:
                    handing_back = _hand_back(confirmations, None, deps)
                    raise handing_back
            finally:
                if handing_back is None:
                    await _release(slot, deps)
            if report is None:
                return None
            # From here on, pages count in the whole document.
            report = _in_the_document(message, job, report)
            if dial.stop.is_set():
                return await cancelled(
                    message, job, deps, calls=job.attempt, report=report, sent=path
                )
            carrier = slot.carrier
            tried.add(carrier.id)
            if report.retry_after_s:
                deps.cooldown.hold(carrier.id, now + timedelta(seconds=report.retry_after_s))
            outcome = (carrier, report)
            if not report.carrier_trouble or len(tried) >= deps.max_carrier_tries:
                break
            if not _untried(carriers, tried, deps, deps.clock()):
                break
            failovers.append(_failed_over(message, job, carrier, report, deps))
        if outcome is None:
            return None
        # Inside the spool directory: the sent TIFF is stored from it.
        return await _conclude(message, job, outcome[0], outcome[1], deps, path, tuple(failovers))


def _hand_back(
    confirmations: PageConfirmations, lost_contact: RetryLater | None, deps: Deps
) -> RetryLater:
    """The job back to the broker with the pages the job does not know were confirmed.

    The database is away (no count written for ``FLUSH_S``, or no lease renewed for a
    whole lease): waiting for it with the message in hand would lose the count if this
    worker died meanwhile. The broker confirms the copy, with the count, before the
    message in hand is acked. The channel is not released (its lease runs out); the
    copy comes back once our lease on the job has.
    """
    if not confirmations.unwritten:
        assert lost_contact is not None
        return lost_contact
    carried = confirmations.note()
    log.warning(
        "the job ledger does not answer; handing the job back with its confirmed pages (%s)",
        carried,
    )
    metrics.HANDED_BACK.inc()
    reason = "the job ledger does not answer; confirmed pages travel with the job"
    return RetryLater(reason, max(1, math.ceil(deps.lease_s)), notes=carried)


def _untried(
    carriers: Sequence[Carrier], tried: set[str], deps: Deps, now: datetime
) -> list[Carrier]:
    return [c for c in carriers if c.id not in tried and not deps.cooldown.cooling(c.id, now)]


def _failed_over(
    message: OutboundFaxRequested, job: Job, carrier: Carrier, report: CallReport, deps: Deps
) -> FaxAttemptFailed:
    """The history's line for a carrier that failed while the next one took the call."""
    assert report.failure is not None
    log.info("carrier %s failed (%s); trying the next carrier", carrier.name, report.failure.text)
    metrics.FAILOVERS.inc()
    event = _attempt_failed(message, job, carrier, report, deps.clock())
    return event.model_copy(update={"carrier_failover": True})


async def _announce(message: OutboundFaxRequested, job: Job, carrier: Carrier, deps: Deps) -> None:
    started = FaxAttemptStarted(
        message_id=uuid.uuid5(_STARTED, f"{message.fax_id}#{job.attempt}").hex,
        **_of_the_fax(message),
        caller_id=message.settings.caller_id,
        attempt=job.attempt,
        carrier_id=carrier.id,
        pages_total=message.pages,
    )
    recorded = await deps.outbox.record(
        Decided(f"{attempt_key(message.fax_id, job.attempt)}:started", (started,))
    )
    # The call need not wait for the broker: what is not confirmed, the sweep publishes.
    await deps.outbox.publish_soon(recorded, only_outages=True)


async def _release(slot: Slot, deps: Deps) -> None:
    # The call is over: a database error here must not lose its outcome (the fax would
    # be dialled again). An unreleased channel frees itself when its lease runs out.
    try:
        await deps.slots.release(slot)
    except Exception as exc:
        if not is_infrastructure(exc):
            raise
        log.warning("could not release channel %s (its lease will run out): %r", slot.key, exc)


def _in_the_document(message: OutboundFaxRequested, job: Job, report: CallReport) -> CallReport:
    """The call's report with its pages counted in the whole document. A call that
    ended badly after the far end confirmed the last page (no DCN, a hang-up) delivered
    the fax: calling again would print it twice."""
    report = replace(report, pages_sent=job.pages_confirmed + report.pages_sent)
    complete = 0 < message.pages <= report.pages_sent
    if report.failure is not None and report.statistics is not None and complete:
        log.info("the call ended badly (%s) after every page was confirmed", report.failure.text)
        report = replace(report, failure=None)
    return report


def _confirmations(
    message: OutboundFaxRequested, job: Job, call: ConfirmingCall, deps: Deps
) -> PageConfirmations:
    def written(pages: int) -> None:
        if pages >= message.pages and crashpoints.armed(
            deps.crash_at, "transmitter", "after_last_confirmation"
        ):
            crashpoints.crash("transmitter", "after_last_confirmation")

    return PageConfirmations(
        deps.ledger,
        job.fax_id,
        deps.worker_id,
        call,
        before=job.pages_confirmed,
        on_written=written,
    )


async def _confirmed_before(
    message: OutboundFaxRequested, job: Job, deps: Deps, path: Path
) -> Recorded | None:
    """End as sent a fax whose every page an earlier call had confirmed: its worker died
    before it could record the call's outcome. No call is made."""
    call = job.confirming_call
    log.warning(
        "every page was confirmed by an earlier call whose outcome was never recorded; "
        "the fax is sent, not dialled again"
    )
    carrier_id = call.carrier_id if call is not None else ""
    transmitted = message.fax_tiff
    if call is not None:
        # What that call sent: the same pages, with the header line of the same moment.
        failure = await _load_document(message, path, deps, call.first_page, call.stamped_at)
        if failure is None:
            transmitted = await deps.documents.put_transmitted(message, call.attempt, path)
    # The call's own figures died with its worker; the pages are what is known.
    statistics = TransferStatistics(
        pages_transferred=job.pages_confirmed,
        pages_total=message.pages,
        bit_rate=0,
        ecm=False,
        x_resolution=0,
        y_resolution=0,
        duration_s=0,
    )
    sent = FaxSent(
        **_of_the_fax(message),
        attempts=max(1, job.attempt - 1),
        calls=max(1, job.calls),
        carrier_id=carrier_id,
        statistics=statistics,
        transmitted_tiff=transmitted,
        source_message_id=message.source_message_id,
    )
    outcome = {
        "success": True,
        "text": "sent (confirmed before the worker stopped)",
        "pages_sent": job.pages_confirmed,
        "carrier_id": carrier_id,
        "at": deps.clock(),
    }
    recorded = await _end_attempt(deps, job, Finish(JobState.SENT, outcome), (sent,), None)
    if recorded is not None:
        metrics.OUTCOMES.labels("sent", "").inc()
    return recorded


async def _load_document(
    message: OutboundFaxRequested, path: Path, deps: Deps, first_page: int, moment: datetime
) -> FaxFailure | None:
    """The fax TIFF from ``first_page`` on, checked, with our header line as of
    ``moment`` drawn in, at ``path``."""
    plain = path.with_name("plain.tif")
    try:
        await deps.documents.fetch(message.fax_tiff, plain)
    except NotFound:
        return FaxFailure(
            failure_class=FailureClass.document,
            code=CODE_NO_DOCUMENT,
            text="The document to fax could no longer be found.",
            reason=FailureReason.document_unavailable,
        )
    try:
        await asyncio.to_thread(check_tiff, plain)
        data = await asyncio.to_thread(plain.read_bytes)
        headed = await asyncio.to_thread(stamped, data, message, moment, first_page=first_page)
        await asyncio.to_thread(path.write_bytes, headed)
        await asyncio.to_thread(check_tiff, path)
    except TiffRejected as exc:
        log.warning("refusing the document before dialling: %s", exc.message)
        return FaxFailure(
            failure_class=FailureClass.document,
            code=CODE_BAD_DOCUMENT,
            text=exc.message,
            reason=FailureReason.document_unreadable,
        )
    return None


def _no_resources() -> FaxFailure:
    return FaxFailure(
        failure_class=FailureClass.resources,
        code=CODE_NO_RESOURCES,
        text=NO_RESOURCES,
        reason=FailureReason.no_available_resources,
    )


async def _all_busy(
    message: OutboundFaxRequested, job: Job, carriers: Sequence[Carrier], deps: Deps, now: datetime
) -> Recorded | None:
    # Busy channels are our own capacity, not the fax's fault: not an attempt, and a
    # short wait, until it has lasted so long that the sender should hear about it.
    if job.busy_since is not None and (now - job.busy_since).total_seconds() > deps.busy_give_up_s:
        return await _fail(message, job, _no_resources(), deps, pages_sent=0, calls=job.attempt - 1)
    metrics.CARRIER_BUSY.inc()
    retry_at = now + timedelta(seconds=deps.busy_retry_s)
    await deps.ledger.put_back(job.fax_id, deps.worker_id, job.attempt, retry_at, now)
    names = ", ".join(c.name for c in carriers)
    raise RetryLater(f"every channel of {names} is in use", deps.busy_retry_s)


def _dial(
    message: OutboundFaxRequested,
    job: Job,
    slot: Slot,
    path: Path,
    confirmations: PageConfirmations,
) -> Dial:
    settings = message.settings
    return Dial(
        fax_id=message.fax_id,
        destination=message.destination,
        caller_id=settings.caller_id,
        carrier=slot.carrier,
        tiff=path,
        pages_total=message.pages - job.pages_confirmed,  # this call's
        identity=settings.identity or (settings.caller_id or ""),
        timezone=settings.timezone,
        degrade=job.degrade,
        first_page=job.pages_confirmed + 1,
        on_page_confirmed=confirmations.confirmed,
    )


async def _call_with_lease(
    dial: Dial, job: Job, slot: Slot, deps: Deps, job_writes: asyncio.Lock
) -> CallReport | None:
    """Run the call while renewing our leases and watching for a cancel; None if the job
    stopped being ours. A cancel sets ``dial.stop``: the line ends the call cleanly and
    the report says what was confirmed. ``job_writes``: taken for each write to the job,
    which the call's confirmed pages are written to as well (one write at a time: FerretDB
    writes back the whole document a conditional write read).

    The keeping runs beside the call, not between looks at it: a database that does not
    answer must not hold up the end of a call that is over (its confirmed pages may have
    to be handed back at once)."""
    metrics.CALLS_IN_PROGRESS.inc()
    task = asyncio.create_task(_transmit(deps.line, dial))
    keeper = asyncio.create_task(_keep_the_call(task, dial, job, slot, deps, job_writes))
    try:
        await asyncio.wait({task, keeper}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        keeper.result()  # raises when contact with the job ledger was lost
        # Another worker holds the job now (and the message copy it came with).
        log.error("lost the lease on the job mid-call; hanging up")
        return None
    finally:
        await _cancel(keeper)
        await _cancel(task)
        metrics.CALLS_IN_PROGRESS.dec()


async def _keep_the_call(
    call: asyncio.Task[CallReport],
    dial: Dial,
    job: Job,
    slot: Slot,
    deps: Deps,
    job_writes: asyncio.Lock,
) -> None:
    """Renew the leases and look for a cancel while ``call`` runs; returns when the job
    is no longer ours or the call is over (also when a cancellation was swallowed, see
    ``_cancel``), raises ``RetryLater`` after a whole lease without the ledger."""
    interval = max(0.2, deps.lease_s / 3)
    wake = min(interval, deps.cancel_poll_s)
    loop = asyncio.get_running_loop()
    renewed_at = loop.time()
    good_until = deps.clock() + timedelta(seconds=deps.lease_s)
    while True:
        await asyncio.sleep(wake)
        if call.done():
            return
        if not dial.stop.is_set():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(wake):
                    if await deps.cancellations.requested_at(dial.fax_id) is not None:
                        log.info("the fax was cancelled during the call; hanging up")
                        dial.stop.set()
        if loop.time() - renewed_at < interval - 0.01:
            continue
        renewed_at = loop.time()
        now = deps.clock()
        until = now + timedelta(seconds=deps.lease_s)
        try:
            # Bounded: a database that stops answering must not freeze the lease check.
            async with asyncio.timeout(interval):
                async with job_writes:
                    ours = await deps.ledger.renew(job.fax_id, deps.worker_id, job.attempt, until)
                await deps.slots.renew(slot, until)
            good_until = until
        except Exception:
            log.warning("could not renew the call's lease", exc_info=True)
            # Past our lease someone else may take the job: stop before that.
            if now + timedelta(seconds=interval) >= good_until:
                log.error("no contact with the job ledger for a whole lease; hanging up")
                # Nobody else took the job: the message must come back, never be acked.
                raise RetryLater(
                    "lost contact with the job ledger mid-call", max(1, int(deps.lease_s))
                ) from None
            continue
        if not ours:
            return


T = TypeVar("T")


async def _insisting(write: Callable[[], Awaitable[T]], what: str) -> T:
    """Write the end of our attempt, insisting through database trouble.

    The call is over: if this write were lost, the lease would run out and the fax
    would be dialled again. Nobody else can take the job while the database is away
    either, so waiting for it is safe.
    """
    delay = 0.5
    for _ in range(FINISH_TRIES - 1):
        try:
            return await write()
        except Exception as exc:
            if not is_infrastructure(exc):
                raise
            log.warning("could not record %s; retrying in %.1fs", what, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
    return await write()


async def _end_attempt(
    deps: Deps, job: Job, finish: Finish, messages: tuple[Message, ...], retry: RetryLater | None
) -> Recorded | None:
    """Record the attempt's outcome, then end the attempt; None if the job was not ours."""
    current = await _insisting(lambda: deps.ledger.get(job.fax_id), "the job")
    if current is None or (current.state, current.worker_id, current.attempt) != (
        JobState.IN_CALL,
        deps.worker_id,
        job.attempt,
    ):
        return None
    decided = Decided(attempt_key(job.fax_id, job.attempt), messages, retry)
    recorded = await _insisting(lambda: deps.decisions.record(decided), "the attempt's outcome")
    ended = await _insisting(
        lambda: deps.ledger.finish(job.fax_id, deps.worker_id, job.attempt, finish),
        "the attempt's end",
    )
    if not ended:
        log.warning("the job was taken over while the attempt's outcome was recorded")
    return recorded


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for its end (``stopping.stop``); raise what it raised."""
    if task.done():
        return
    await stopping.stop(task)
    if not task.cancelled():
        task.result()  # what it raised instead of ending cancelled


async def _transmit(line: FaxLine, dial: Dial) -> CallReport:
    try:
        return await line.transmit(dial)
    except asyncio.CancelledError:
        raise
    except Exception:
        # An engine or socket fault: count it as a failed attempt, not a lost message.
        log.exception("the fax call failed internally")
        failure = FaxFailure(
            failure_class=FailureClass.protocol,
            code=CODE_INTERNAL,
            text="The call failed because of a fault on our side.",
        )
        return CallReport(failure=failure, pages_sent=0)


def _outcome_doc(report: CallReport, carrier: Carrier | None, at: datetime) -> dict[str, Any]:
    failure = report.failure
    return {
        "success": failure is None,
        "failure_class": failure.failure_class.value if failure else None,
        "code": failure.code if failure else 0,
        "text": failure.text if failure else "sent",
        "sip_status": failure.sip_status if failure else None,
        "pages_sent": report.pages_sent,
        "media": report.media,
        "carrier_id": carrier.id if carrier else None,
        "at": at,
    }


async def _conclude(
    message: OutboundFaxRequested,
    job: Job,
    carrier: Carrier,
    report: CallReport,
    deps: Deps,
    sent_tiff: Path,
    failovers: tuple[Message, ...] = (),
) -> Recorded | None:
    """End the attempt with the last carrier's call, after the carriers it failed over from."""
    now = deps.clock()
    metrics.CALLS.labels(report.media, "sent" if report.success else "failed").inc()
    metrics.PAGES_SENT.inc(report.pages_sent - job.pages_confirmed)
    if report.success:
        assert report.statistics is not None
        # The last call's figures, its pages counted in the whole document.
        statistics = report.statistics.model_copy(
            update={"pages_transferred": report.pages_sent, "pages_total": message.pages}
        )
        transmitted = await deps.documents.put_transmitted(message, job.attempt, sent_tiff)
        sent = FaxSent(
            **_of_the_fax(message),
            attempts=job.attempt,
            calls=job.calls + 1,
            carrier_id=carrier.id,
            statistics=statistics,
            # The TIFF we fed spandsp, header line and all: page 1 of the sent mail's
            # thumbnail is page 1 as the far end printed it.
            transmitted_tiff=transmitted,
            source_message_id=message.source_message_id,
            page_report=await _earlier_pages(message, job, deps) + report.page_report,
        )
        finish = Finish(JobState.SENT, _outcome_doc(report, carrier, now))
        recorded = await _end_attempt(deps, job, finish, (*failovers, sent), None)
        if recorded is None:
            log.error("fax went through but the job was no longer ours; not publishing")
            return None
        metrics.OUTCOMES.labels("sent", "").inc()
        return recorded

    failure = report.failure
    assert failure is not None
    policy = message.retry_policy
    final = (
        not report.retryable
        or failure.failure_class in (FailureClass.document, FailureClass.resources)
        or job.failed_attempts + 1 >= policy.attempts
    )
    if final:
        return await _fail(
            message,
            job,
            failure,
            deps,
            pages_sent=report.pages_sent,
            calls=job.attempt,
            carrier=carrier,
            report=report,
            failovers=failovers,
            sent=sent_tiff,
        )
    delay = max(1, policy.delay_before_attempt(job.failed_attempts + 2))
    next_at = now + timedelta(seconds=delay)
    degrade = job.degrade + 1 if failure.failure_class is FailureClass.protocol else job.degrade
    event = _attempt_failed(message, job, carrier, report, next_at)
    finish = Finish(
        JobState.WAITING_RETRY,
        _outcome_doc(report, carrier, now),
        next_attempt_at=next_at,
        failed=True,
        degrade=degrade,
    )
    redial = RetryLater(
        f"attempt {job.attempt} failed ({failure.failure_class.value}: {failure.text}); "
        f"redial in {delay}s",
        delay,
    )
    recorded = await _end_attempt(deps, job, finish, (*failovers, event), redial)
    if recorded is None:
        log.error("attempt ended but the job was no longer ours")
        return None
    metrics.OUTCOMES.labels("retry", failure.failure_class.value).inc()
    return recorded


async def _earlier_pages(
    message: OutboundFaxRequested, job: Job, deps: Deps
) -> tuple[PageReport, ...]:
    """The reports of the pages earlier calls delivered (this call resumed after them),
    from their attempts' recorded outcomes; a page sent more than once, the last time."""
    if job.pages_confirmed == 0:
        return ()
    delivered: dict[int, PageReport] = {}
    for attempt in range(1, job.attempt):
        recorded = await deps.decisions.get(attempt_key(message.fax_id, attempt))
        if recorded is None:  # a worker died on that call: its figures went with it
            continue
        failed = _first([m for m in recorded.messages if not _failover(m)], FaxAttemptFailed)
        for page in failed.page_report if failed is not None else ():
            if page.confirmed and page.page <= job.pages_confirmed:
                delivered[page.page] = page
    return tuple(delivered[n] for n in sorted(delivered))


def _attempt_failed(
    message: OutboundFaxRequested,
    job: Job,
    carrier: Carrier,
    report: CallReport,
    next_at: datetime | None,
) -> FaxAttemptFailed:
    assert report.failure is not None
    return FaxAttemptFailed(
        **_of_the_fax(message, owner=False),
        attempt=job.attempt,
        attempts_allowed=message.retry_policy.attempts,
        failure=report.failure,
        pages_sent=report.pages_sent,
        carrier_id=carrier.id,
        next_attempt_at=next_at,
        page_report=report.page_report,
    )


async def _fail(
    message: OutboundFaxRequested,
    job: Job,
    failure: FaxFailure,
    deps: Deps,
    *,
    pages_sent: int,
    calls: int,
    carrier: Carrier | None = None,
    report: CallReport | None = None,
    failovers: tuple[Message, ...] = (),
    sent: Path | None = None,
    page_report: tuple[PageReport, ...] | None = None,
) -> Recorded | None:
    transmitted = None
    if sent is not None and report is not None and report.pages_sent > 0:
        transmitted = await deps.documents.put_transmitted(message, job.attempt, sent)
    failed = FaxFailed(
        **_of_the_fax(message),
        attempts=max(0, calls),
        failure=failure,
        pages_sent=pages_sent,
        pages_total=message.pages,
        source_message_id=message.source_message_id,
        page_report=page_report if page_report is not None else _report_of(report),
        transmitted_tiff=transmitted,
    )
    outcome = _outcome_doc(report or CallReport(failure, pages_sent), carrier, deps.clock())
    # A call that was made is an attempt like the others (with no next one); a fax
    # refused before dialling made no attempt.
    messages: tuple[Message, ...] = (failed,)
    if report is not None and carrier is not None:
        messages = (*failovers, _attempt_failed(message, job, carrier, report, None), failed)
    finish = Finish(JobState.FAILED, outcome, failed=report is not None)
    recorded = await _end_attempt(deps, job, finish, messages, None)
    if recorded is None:
        log.error("fax failed but the job was no longer ours; not publishing")
        return None
    outcome_name = "partial" if failed.partial else "failed"
    metrics.OUTCOMES.labels(outcome_name, failure.failure_class.value).inc()
    log.info(
        "fax %s for good: %s (%s), %d of %d pages",
        "partly sent" if failed.partial else "failed",
        failure.text,
        failure.failure_class.value,
        pages_sent,
        message.pages,
    )
    return recorded


def _report_of(report: CallReport | None) -> tuple[PageReport, ...]:
    return report.page_report if report is not None else ()


async def cancelled(
    message: OutboundFaxRequested,
    job: Job,
    deps: Deps,
    *,
    calls: int,
    report: CallReport | None = None,
    sent: Path | None = None,
) -> Recorded | None:
    """End the fax as cancelled by its sender, with what its last call confirmed.

    ``job`` is claimed for this attempt: during a call, ``report`` is the call's; before
    one (queued, between calls), the previous attempt's recorded outcome gives the last
    call's figures.
    """
    pages_sent: int = 0
    page_report: tuple[PageReport, ...] = ()
    if report is not None:
        pages_sent, page_report = report.pages_sent, report.page_report
    else:
        previous = await deps.decisions.get(attempt_key(job.fax_id, job.attempt - 1))
        last = _first(previous.messages, FaxAttemptFailed) if previous is not None else None
        if last is not None:
            pages_sent, page_report = last.pages_sent, last.page_report
    during = " during the call" if report is not None else ""
    failure = FaxFailure(
        failure_class=FailureClass.cancelled,
        code=CODE_CANCELLED,
        text=f"The fax was cancelled by its sender{during}; "
        f"{pages_sent} of {message.pages} pages had been confirmed.",
        reason=FailureReason.cancelled,
    )
    return await _fail(
        message,
        job,
        failure,
        deps,
        pages_sent=pages_sent,
        calls=calls,
        report=report,
        sent=sent,
        page_report=page_report,
    )
