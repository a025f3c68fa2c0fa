"""What the simulator remembers about each call, for tests and the control API."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import Counter
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from faxbox.fax.line.contract import page_report
from faxbox.fax.outcome import FaxOutcome
from faxbox.shared.contracts import PageReport

Direction = Literal["to_sim", "from_sim"]
Media = Literal["g711", "t38"]


def now() -> datetime:
    return datetime.now(UTC)


class OutcomeSummary(BaseModel):
    success: bool
    completion_code: int
    completion_name: str
    pages: int
    failure_class: str | None
    text: str
    remote_id: str
    bit_rate: int
    ecm: bool
    # The simulated machine's own per-page report (phase D), to check the caller's with.
    page_report: list[PageReport] = []

    @classmethod
    def of(cls, outcome: FaxOutcome) -> OutcomeSummary:
        return cls(
            success=outcome.success,
            completion_code=outcome.completion_code,
            completion_name=outcome.completion_name,
            pages=outcome.pages_transferred,
            failure_class=outcome.failure_class.value if outcome.failure_class else None,
            text=outcome.message,
            remote_id=outcome.remote_id,
            bit_rate=outcome.bit_rate,
            ecm=outcome.ecm,
            page_report=list(page_report(outcome)),
        )


class Try(BaseModel):
    """One try of an originated call (``redial``): the call record's fields are its last's."""

    started_at: datetime
    uri: str | None = None  # the route this try went to
    ended_at: datetime | None = None
    answered_at: datetime | None = None
    sip_status: int | None = None
    retry_after_s: int | None = None
    pages: int = 0  # confirmed by the receiver
    error: str | None = None


class CallRecord(BaseModel):
    id: str
    direction: Direction
    from_: str
    to: str
    behaviour: str
    media: Media = "g711"
    started_at: datetime
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    sip_status: int | None = None
    outcome: OutcomeSummary | None = None
    received_tiff: str | None = None
    pages_received: int = 0
    # Per received page, its pixels' digest below our header line (``pages``): equal to
    # the digest of the document's page it is, so tests know which pages a call carried.
    page_digests: list[str] = []
    # Why the simulator itself could not go on (bad document, unreachable receiver ...).
    error: str | None = None
    # An originated call: each try, in order (one call, one fax, however many tries).
    tries: list[Try] = []

    def public(self) -> dict[str, object]:
        data = self.model_dump(mode="json")
        data["from"] = data.pop("from_")
        return data


class CallLog:
    """Every call since the start or the last reset, in order; waiters per call.

    Past ``max_records`` the oldest ended calls are forgotten (a demo left running), but
    not from the per-number counts of calls to the simulator (``busy_first`` uses them).
    """

    def __init__(self, max_records: int = 10_000) -> None:
        self.max_records = max_records
        self._records: dict[str, CallRecord] = {}
        self._ended: dict[str, asyncio.Event] = {}
        self._prefix = secrets.token_hex(3)
        self._counter = itertools.count(1)
        self._dialled: Counter[str] = Counter()

    def new(self, direction: Direction, from_: str, to: str, behaviour: str) -> CallRecord:
        record = CallRecord(
            id=f"{self._prefix}-{next(self._counter)}",
            direction=direction,
            from_=from_,
            to=to,
            behaviour=behaviour,
            started_at=now(),
        )
        self._records[record.id] = record
        self._ended[record.id] = asyncio.Event()
        if len(self._records) > self.max_records:
            for old in [r for r in self._records.values() if r.ended_at is not None][
                : len(self._records) - self.max_records
            ]:
                del self._records[old.id]
                self._ended.pop(old.id, None)
        return record

    def end(self, record: CallRecord) -> None:
        if record.ended_at is None:
            record.ended_at = now()
        event = self._ended.get(record.id)
        if event is not None:
            event.set()

    def get(self, call_id: str) -> CallRecord | None:
        return self._records.get(call_id)

    def all(self) -> list[CallRecord]:
        return list(self._records.values())

    def dialled(self, number: str) -> int:
        """Count a call to ``number``: 1 for its first since the start or the last reset."""
        self._dialled[number] += 1
        return self._dialled[number]

    def dial_counts(self) -> dict[str, int]:
        return dict(self._dialled)

    def reset(self) -> None:
        self._records.clear()
        self._ended.clear()
        self._dialled.clear()

    async def wait(self, call_id: str) -> CallRecord:
        """The record once the call has ended (KeyError for an unknown id)."""
        record = self._records[call_id]
        await self._ended[call_id].wait()
        return record

    async def wait_for(self, to: str | None = None, *, count: int = 1) -> list[CallRecord]:
        """The first ``count`` ended calls (to ``to`` if given), waiting for them."""
        while True:
            done = [
                r
                for r in self._records.values()
                if r.ended_at is not None and (to is None or r.to == to)
            ]
            if len(done) >= count:
                return done[:count]
            await asyncio.sleep(0.02)
