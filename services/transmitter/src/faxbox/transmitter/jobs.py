"""The job ledger: one document per fax (``_id`` = fax id) that decides who may dial.

Every state change is one ``find_one_and_update`` conditioned on the current state
(FerretDB has no transactions); because FerretDB v1 does not make even that atomic, a
claim also inserts ``<fax>#<attempt>`` into ``transmitter_attempt_claims`` (a unique
``_id``, exclusive everywhere), so two workers holding two copies of the same request
can never both dial the same attempt:

- ``queued`` → ``in_call``: the first claim, attempt 1;
- ``waiting_retry`` → ``in_call``: the redial, once ``next_attempt_at`` has come;
- ``in_call`` (lease expired: the worker died) → ``in_call``: a new attempt by another
  worker; while the lease is live nobody else may touch the job;
- ``in_call`` → ``sent`` / ``failed`` / ``waiting_retry``: by the holder of the lease for
  that attempt, once the attempt's outcome is recorded as a decision of the outbox
  (``<fax>#<attempt>``, see ``faxbox.shared.outbox``), which is what a redelivery
  publishes again; or, when that holder died between the two writes, by the next
  worker, from the recorded outcome;
- ``queued`` / ``waiting_retry`` → ``in_call`` → ``failed``: a cancel between calls,
  taken as a claim is (the next attempt's number, by whoever wins its insert, so a
  cancel and a redial never both win) and ended at once with no call made.

The request itself is kept in the job (``request_json``, written with the job), so a
cancel that arrives while the request waits in a retry queue can end the fax at once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from faxbox.shared.store.claims import claim

Doc = dict[str, Any]

COLLECTION = "transmitter_jobs"
CLAIMS_COLLECTION = "transmitter_attempt_claims"


class JobState(StrEnum):
    QUEUED = "queued"
    IN_CALL = "in_call"
    WAITING_RETRY = "waiting_retry"
    SENT = "sent"
    FAILED = "failed"


TERMINAL = (JobState.SENT, JobState.FAILED)


@dataclass(frozen=True, slots=True)
class Job:
    fax_id: str
    state: JobState
    attempt: int = 0  # calls started (a crash-resumed call counts)
    failed_attempts: int = 0  # calls that ended in a fax failure: the retry budget
    degrade: int = 0  # protocol fallback level for the next call (ECM off, slower modem)
    worker_id: str | None = None
    lease_until: datetime | None = None
    next_attempt_at: datetime | None = None
    busy_since: datetime | None = None
    last_outcome: dict[str, Any] | None = None
    request_json: str | None = None

    def lease_live(self, now: datetime) -> bool:
        return self.lease_until is not None and self.lease_until > now

    @classmethod
    def from_doc(cls, doc: Doc) -> Job:
        return cls(
            fax_id=str(doc["_id"]),
            state=JobState(doc["state"]),
            attempt=int(doc.get("attempt", 0)),
            failed_attempts=int(doc.get("failed_attempts", 0)),
            degrade=int(doc.get("degrade", 0)),
            worker_id=doc.get("worker_id"),
            lease_until=doc.get("lease_until"),
            next_attempt_at=doc.get("next_attempt_at"),
            busy_since=doc.get("busy_since"),
            last_outcome=doc.get("last_outcome"),
            request_json=doc.get("request_json"),
        )


@dataclass(frozen=True, slots=True)
class Finish:
    """How one attempt ended, as written by the lease holder."""

    state: JobState
    last_outcome: dict[str, Any]
    next_attempt_at: datetime | None = None
    failed: bool = False  # counts against the retry budget
    degrade: int | None = None


class JobLedger(Protocol):
    async def ensure(self, fax_id: str, now: datetime, request_json: str | None = None) -> Job:
        """The job, created as ``queued`` on first sight (keeping the request)."""
        ...

    async def get(self, fax_id: str) -> Job | None: ...

    async def claim(self, fax_id: str, worker_id: str, now: datetime, lease_s: float) -> Job | None:
        """Take the job for a new attempt; None when it is not claimable now."""
        ...

    async def renew(self, fax_id: str, worker_id: str, attempt: int, until: datetime) -> bool:
        """Extend our lease; False when the job is no longer ours."""
        ...

    async def finish(self, fax_id: str, worker_id: str, attempt: int, finish: Finish) -> bool:
        """Record the end of our attempt; False when the job is no longer ours."""
        ...

    async def put_back(
        self, fax_id: str, worker_id: str, attempt: int, retry_at: datetime, now: datetime
    ) -> bool:
        """Undo our claim without a call (every carrier busy): not an attempt."""
        ...

    async def claim_cancel(
        self, fax_id: str, worker_id: str, now: datetime, lease_s: float
    ) -> Job | None:
        """Take a job that is not on the line (queued, waiting for a redial, due or not)
        to end it as cancelled; None when it is on the line or over, or another took it."""
        ...


def claimable_filter(fax_id: str, now: datetime) -> Doc:
    return {
        "_id": fax_id,
        "$or": [
            {"state": JobState.QUEUED.value},
            {"state": JobState.WAITING_RETRY.value, "next_attempt_at": {"$lte": now}},
            {"state": JobState.IN_CALL.value, "lease_until": {"$lt": now}},
        ],
    }


class MongoJobLedger:
    def __init__(self, collection: AsyncCollection[Doc]) -> None:
        self.collection = collection
        self.claims = collection.database[CLAIMS_COLLECTION]

    async def ensure_indexes(self) -> None:
        # Operators look for stuck calls by state and lease; one index per command
        # (FerretDB v1.24 crashes on a createIndexes naming several existing indexes).
        await self.collection.create_index(
            [("state", ASCENDING), ("lease_until", ASCENDING)], name="state_lease"
        )

    async def ensure(self, fax_id: str, now: datetime, request_json: str | None = None) -> Job:
        with contextlib.suppress(DuplicateKeyError):
            await self.collection.insert_one(
                {
                    "_id": fax_id,
                    "state": JobState.QUEUED.value,
                    "attempt": 0,
                    "failed_attempts": 0,
                    "degrade": 0,
                    "request_json": request_json,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        job = await self.get(fax_id)
        if job is None:  # deleted in between by an operator: start again
            raise RuntimeError(f"job {fax_id} vanished while being read")
        return job

    async def get(self, fax_id: str) -> Job | None:
        doc = await self.collection.find_one({"_id": fax_id})
        return None if doc is None else Job.from_doc(doc)

    async def claim(self, fax_id: str, worker_id: str, now: datetime, lease_s: float) -> Job | None:
        return await self._take(claimable_filter(fax_id, now), fax_id, worker_id, now, lease_s)

    async def _take(
        self, filter_: Doc, fax_id: str, worker_id: str, now: datetime, lease_s: float
    ) -> Job | None:
        doc = await self.collection.find_one_and_update(
            filter_,
            {
                "$set": {
                    "state": JobState.IN_CALL.value,
                    "worker_id": worker_id,
                    "lease_until": now + timedelta(seconds=lease_s),
                    "updated_at": now,
                },
                "$inc": {"attempt": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return None
        job = Job.from_doc(doc)
        # FerretDB v1 applies that conditional update as read-then-write, so two workers
        # can both "win" it (and both read the same new attempt number). The unique insert
        # of <fax>#<attempt> is exclusive on every server: only its winner may dial.
        if not await claim(
            self.claims, f"{fax_id}#{job.attempt}", worker_id=worker_id, claimed_at=now
        ):
            return None
        return job

    def _ours(self, fax_id: str, worker_id: str, attempt: int) -> Doc:
        return {
            "_id": fax_id,
            "state": JobState.IN_CALL.value,
            "worker_id": worker_id,
            "attempt": attempt,
        }

    async def renew(self, fax_id: str, worker_id: str, attempt: int, until: datetime) -> bool:
        result = await self.collection.update_one(
            self._ours(fax_id, worker_id, attempt), {"$set": {"lease_until": until}}
        )
        return result.matched_count == 1

    async def finish(self, fax_id: str, worker_id: str, attempt: int, finish: Finish) -> bool:
        fields: Doc = {
            "state": finish.state.value,
            "last_outcome": finish.last_outcome,
            "lease_until": None,
            "next_attempt_at": finish.next_attempt_at,
        }
        if finish.degrade is not None:
            fields["degrade"] = finish.degrade
        update: Doc = {"$set": fields, "$unset": {"busy_since": ""}}
        if finish.failed:
            update["$inc"] = {"failed_attempts": 1}
        result = await self.collection.update_one(self._ours(fax_id, worker_id, attempt), update)
        return result.matched_count == 1

    async def put_back(
        self, fax_id: str, worker_id: str, attempt: int, retry_at: datetime, now: datetime
    ) -> bool:
        # The attempt was never made: free its number first (while the job is still ours
        # and nobody else can claim it), or the next claim would take the same number,
        # lose its insert and leave the job "on the line" with nobody calling.
        await self.claims.delete_one({"_id": f"{fax_id}#{attempt}", "worker_id": worker_id})
        result = await self.collection.update_one(
            self._ours(fax_id, worker_id, attempt),
            {
                "$set": {
                    "state": JobState.WAITING_RETRY.value,
                    "lease_until": None,
                    "next_attempt_at": retry_at,
                    "updated_at": now,
                },
                "$inc": {"attempt": -1},
                "$min": {"busy_since": now},
            },
        )
        return result.matched_count == 1

    async def claim_cancel(
        self, fax_id: str, worker_id: str, now: datetime, lease_s: float
    ) -> Job | None:
        waiting = {
            "_id": fax_id,
            "state": {"$in": [JobState.QUEUED.value, JobState.WAITING_RETRY.value]},
        }
        return await self._take(waiting, fax_id, worker_id, now, lease_s)
