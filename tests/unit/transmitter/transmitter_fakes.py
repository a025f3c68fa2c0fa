"""Fakes of the transmitter's own ports (ledger, slots, carriers, line) and its runtime."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from PIL import Image

from faxbox.shared.contracts import (
    DocumentRef,
    FaxCancelRequested,
    FaxFailure,
    FaxSettings,
    OutboundFaxRequested,
    PageReport,
    RetryPolicy,
    TransferStatistics,
)
from faxbox.shared.outbox import Outbox
from faxbox.shared.store import Carrier
from faxbox.shared.testing import ManualClock, MemoryDecisionStore, MemoryDocuments, MemoryPublisher
from faxbox.transmitter.cancelling import handle_cancel
from faxbox.transmitter.carriers import Slot
from faxbox.transmitter.handlers import Deps, handle_outbound
from faxbox.transmitter.jobs import ConfirmingCall, Finish, Job, JobState
from faxbox.transmitter.line import CallReport, Dial

Clock = ManualClock


class FakeLedger:
    """Same conditions as MongoJobLedger, on a dict."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.renew_fails = False
        self.renew_raises: Exception | None = None
        self.finish_raises: list[Exception] = []
        self.confirmed_writes: list[int] = []
        self.confirm_raises: Exception | None = None
        self.carried_by: dict[str, set[int]] = {}

    async def ensure(self, fax_id: str, now: datetime, request_json: str | None = None) -> Job:
        return self.jobs.setdefault(fax_id, Job(fax_id, JobState.QUEUED, request_json=request_json))

    async def get(self, fax_id: str) -> Job | None:
        return self.jobs.get(fax_id)

    async def claim(self, fax_id: str, worker_id: str, now: datetime, lease_s: float) -> Job | None:
        job = self.jobs.get(fax_id)
        if job is None:
            return None
        claimable = (
            job.state is JobState.QUEUED
            or (
                job.state is JobState.WAITING_RETRY
                and job.next_attempt_at is not None
                and job.next_attempt_at <= now
            )
            or (
                job.state is JobState.IN_CALL
                and job.lease_until is not None
                and job.lease_until < now
            )
        )
        if not claimable:
            return None
        job = dataclasses.replace(
            job,
            state=JobState.IN_CALL,
            worker_id=worker_id,
            lease_until=now + timedelta(seconds=lease_s),
            attempt=job.attempt + 1,
        )
        self.jobs[fax_id] = job
        return job

    def _ours(self, fax_id: str, worker_id: str, attempt: int) -> Job | None:
        job = self.jobs.get(fax_id)
        if (
            job is None
            or job.state is not JobState.IN_CALL
            or job.worker_id != worker_id
            or job.attempt != attempt
        ):
            return None
        return job

    async def renew(self, fax_id: str, worker_id: str, attempt: int, until: datetime) -> bool:
        if self.renew_raises is not None:
            raise self.renew_raises
        job = self._ours(fax_id, worker_id, attempt)
        if job is None or self.renew_fails:
            return False
        self.jobs[fax_id] = dataclasses.replace(job, lease_until=until)
        return True

    async def finish(self, fax_id: str, worker_id: str, attempt: int, finish: Finish) -> bool:
        if self.finish_raises:
            raise self.finish_raises.pop(0)
        job = self._ours(fax_id, worker_id, attempt)
        if job is None:
            return False
        changes: dict[str, object] = {
            "state": finish.state,
            "last_outcome": finish.last_outcome,
            "lease_until": None,
            "next_attempt_at": finish.next_attempt_at,
            "busy_since": None,
        }
        if finish.degrade is not None:
            changes["degrade"] = finish.degrade
        if finish.failed:
            changes["failed_attempts"] = job.failed_attempts + 1
        self.jobs[fax_id] = dataclasses.replace(job, **changes)  # type: ignore[arg-type]
        return True

    async def confirm_pages(
        self, fax_id: str, worker_id: str, attempt: int, pages: int, call: ConfirmingCall
    ) -> bool:
        if self.confirm_raises is not None:
            raise self.confirm_raises
        job = self._ours(fax_id, worker_id, attempt)
        if job is None:
            return False
        self.confirmed_writes.append(pages)
        self.carried_by.setdefault(fax_id, set()).add(call.attempt)
        self.jobs[fax_id] = dataclasses.replace(
            job,
            pages_confirmed=max(job.pages_confirmed, pages),
            calls=len(self.carried_by[fax_id]),
            confirming_call=call,
        )
        return True

    async def put_back(
        self, fax_id: str, worker_id: str, attempt: int, retry_at: datetime, now: datetime
    ) -> bool:
        job = self._ours(fax_id, worker_id, attempt)
        if job is None:
            return False
        self.jobs[fax_id] = dataclasses.replace(
            job,
            state=JobState.WAITING_RETRY,
            lease_until=None,
            next_attempt_at=retry_at,
            attempt=job.attempt - 1,
            busy_since=min(job.busy_since or now, now),
        )
        return True

    async def claim_cancel(
        self, fax_id: str, worker_id: str, now: datetime, lease_s: float
    ) -> Job | None:
        job = self.jobs.get(fax_id)
        if job is None or job.state not in (JobState.QUEUED, JobState.WAITING_RETRY):
            return None
        job = dataclasses.replace(
            job,
            state=JobState.IN_CALL,
            worker_id=worker_id,
            attempt=job.attempt + 1,
            lease_until=now + timedelta(seconds=lease_s),
        )
        self.jobs[fax_id] = job
        return job


class FakeCancellations:
    def __init__(self) -> None:
        self.requested: dict[str, datetime] = {}

    async def requested_at(self, fax_id: str) -> datetime | None:
        return self.requested.get(fax_id)


class FakeSlots:
    def __init__(self) -> None:
        self.held: dict[str, tuple[str, datetime]] = {}
        self.released: list[str] = []

    async def acquire(
        self, carriers: Sequence[Carrier], holder: str, now: datetime, lease_s: float
    ) -> Slot | None:
        for carrier in carriers:
            for n in range(carrier.channel_cap):
                key = f"{carrier.id}:{n}"
                current = self.held.get(key)
                if current is None or current[1] < now:
                    self.held[key] = (holder, now + timedelta(seconds=lease_s))
                    return Slot(carrier, key, holder)
        return None

    async def renew(self, slot: Slot, until: datetime) -> bool:
        if self.held.get(slot.key, ("", until))[0] != slot.holder:
            return False
        self.held[slot.key] = (slot.holder, until)
        return True

    async def release(self, slot: Slot) -> None:
        if self.held.get(slot.key, ("",))[0] == slot.holder:
            del self.held[slot.key]
            self.released.append(slot.key)


class FakeCarriers:
    def __init__(self, carriers: list[Carrier]) -> None:
        self.carriers = carriers

    async def list_carriers(self, *, flag: str | None = None) -> list[Carrier]:
        return [c for c in self.carriers if flag is None or flag in c.flags]


class FakeDocuments(MemoryDocuments):
    """The shared in-memory documents, keeping each attempt's transmitted TIFF too."""

    def __init__(self) -> None:
        super().__init__()
        self.transmitted: dict[tuple[str, int], bytes] = {}

    async def put_transmitted(
        self, message: OutboundFaxRequested, attempt: int, path: Path
    ) -> DocumentRef:
        data = await asyncio.to_thread(path.read_bytes)
        self.transmitted.setdefault((message.fax_id, attempt), data)
        return await self.put(
            message.account_id,
            message.month,
            data,
            filename=f"{message.fax_id}-sent.tif",
            content_type="image/tiff",
            metadata={"fax_id": message.fax_id, "role": f"transmitted#{attempt}"},
        )


class FakeLine:
    """Answers each call with the next scripted report (or a callable making one)."""

    def __init__(self, *script: CallReport | Callable[[Dial], object]) -> None:
        self.script = list(script)
        self.dials: list[Dial] = []

    async def transmit(self, dial: Dial) -> CallReport:
        self.dials.append(dial)
        step = self.script.pop(0)
        if isinstance(step, CallReport):
            return step
        result = step(dial)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, CallReport)
        return result


@dataclass
class Transmitter:
    """The handler as the transmitter's consumer runs it: what it decides is published."""

    deps: Deps
    bus: MemoryPublisher
    decisions: MemoryDecisionStore

    async def handle(self, message: OutboundFaxRequested) -> None:
        await Outbox(self.decisions, self.bus).consuming(partial(handle_outbound, deps=self.deps))(
            message
        )

    async def cancel(self, message: FaxCancelRequested) -> None:
        await Outbox(self.decisions, self.bus).consuming(partial(handle_cancel, deps=self.deps))(
            message
        )


def fax_tiff(path: Path, width: int = 1728, pages: int = 1) -> Path:
    # Each page distinct (a black bar at its own height), so a test can tell them apart.
    images = []
    for n in range(pages):
        image = Image.new("1", (width, 200), 1)
        image.paste(0, (0, 20 * n, width, 20 * n + 10))
        images.append(image)
    images[0].save(
        path, compression="group4", dpi=(204, 196), save_all=True, append_images=images[1:]
    )
    return path


def ref(file_id: str) -> DocumentRef:
    return DocumentRef(
        account_id="acc1",
        month="202611",
        file_id=file_id,
        filename="fax.tif",
        content_type="image/tiff",
        length=1,
        sha256="0" * 64,
    )


def request(file_id: str = "good", **changes: object) -> OutboundFaxRequested:
    return OutboundFaxRequested.model_validate(
        {
            "fax_id": "fax_1",
            "account_id": "acc1",
            "month": "202611",
            "user_id": "usr1",
            "faxbox_id": "fbx1",
            "sender_email": "a@example.com",
            "destination": "+12125550100",
            "settings": FaxSettings(caller_id="+12125550199", identity="ACME"),
            "retry_policy": RetryPolicy(),
            "original": ref(file_id),
            "fax_tiff": ref(file_id),
            "pages": 2,
            **changes,
        }
    )


def page(number: int, confirmed: bool = True) -> PageReport:
    return PageReport(
        page=number,
        confirmed=confirmed,
        result="MCF" if confirmed else "RTN",
        bit_rate=14400,
        ecm=True,
        x_resolution=8031,
        y_resolution=7700,
        encoding="T.6",
        length=200,
        image_bytes=1000,
        bad_rows=0,
        longest_bad_row_run=0,
        ecm_retries=0,
    )


def sent_report(pages: int = 2) -> CallReport:
    stats = TransferStatistics(
        pages_transferred=pages,
        pages_total=pages,
        bit_rate=14400,
        ecm=True,
        x_resolution=8031,
        y_resolution=7700,
        remote_station_id="FAR",
        duration_s=42.0,
    )
    return CallReport(failure=None, pages_sent=pages, statistics=stats, media="t38")


def failed_report(
    failure_class: str, code: int, *, pages: int = 0, sip: int | None = None, retryable: bool = True
) -> CallReport:
    failure = FaxFailure.model_validate(
        {"failure_class": failure_class, "code": code, "text": "it failed", "sip_status": sip}
    )
    return CallReport(failure=failure, pages_sent=pages, media="audio", retryable=retryable)


def carrier(name: str = "c1", **changes: object) -> Carrier:
    return Carrier.model_validate(
        {
            "_id": f"car_{name}",
            "name": name,
            "flags": ["fax"],
            "sip_host": "127.0.0.1",
            "sip_port": 5070,
            "channel_cap": 2,
            **changes,
        }
    )


def transmitter(
    tmp: Path,
    line: FakeLine,
    *,
    carriers: list[Carrier] | None = None,
    ledger: FakeLedger | None = None,
    slots: FakeSlots | None = None,
    decisions: MemoryDecisionStore | None = None,
    bus: MemoryPublisher | None = None,
    clock: Callable[[], datetime] | None = None,
    cancellations: FakeCancellations | None = None,
    cancel_poll_s: float = 2.0,
    worker_id: str = "w1",
    lease_s: float = 60.0,
) -> Transmitter:
    documents = FakeDocuments()
    documents.keep(ref("good"), fax_tiff(tmp / "good.tif").read_bytes())
    documents.keep(ref("narrow"), fax_tiff(tmp / "narrow.tif", 1000).read_bytes())
    documents.keep(ref("five"), fax_tiff(tmp / "five.tif", pages=5).read_bytes())
    decisions = decisions or MemoryDecisionStore()
    bus = bus or MemoryPublisher()
    deps = Deps(
        ledger=ledger or FakeLedger(),
        slots=slots or FakeSlots(),
        carriers=FakeCarriers([carrier()] if carriers is None else carriers),
        documents=documents,
        line=line,
        decisions=decisions,
        outbox=Outbox(decisions, bus),
        cancellations=cancellations or FakeCancellations(),
        worker_id=worker_id,
        calls=asyncio.Semaphore(4),
        lease_s=lease_s,
        cancel_poll_s=cancel_poll_s,
        busy_retry_s=15,
        busy_give_up_s=600,
        spool_dir=tmp,
        clock=clock or Clock(),
    )
    return Transmitter(deps, bus, decisions)
