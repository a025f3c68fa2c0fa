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

Whose an attempt is, is said by its claim, not by the job's ``worker_id``: the losers
of a claim may write their name into the job after the winner. Ending an attempt is an
insert as well, ``<fax>#<attempt>`` into ``transmitter_attempt_ends``, made by its
worker before it writes the end and by a worker taking the job over (lease expired)
before it dials the next attempt: a worker that ends its attempt late, just as others
take the job over, either ends it or learns it lost, never both. FerretDB writes back
the whole document a conditional write read, so a taker that lost the end may have
undone it in the job: it writes the winner's end (kept in the end's document) back.

While a call is on the line, its holder writes the pages the far end has confirmed as
each is confirmed (``confirm_pages``: ``pages_confirmed`` counts in the whole document,
``carried_by`` lists the attempts whose calls confirmed any, ``confirming_call`` says
which call confirmed the last): the next attempt sends only the pages after them, and a
job found with every page confirmed ends as sent without another call. The holder's
own job writes during a call (these, its lease renewals) take turns: FerretDB writes
back the whole document a conditional write read, so two at once could undo one.

The request itself is kept in the job (``request_json``, written with the job), so a
cancel that arrives while the request waits in a retry queue can end the fax at once.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from faxbox.shared.store.claims import claim

Doc = dict[str, Any]

COLLECTION = "transmitter_jobs"
CLAIMS_COLLECTION = "transmitter_attempt_claims"
ENDS_COLLECTION = "transmitter_attempt_ends"
# At most this many writes of an attempt's end, when a losing taker's write landed after
# it (every one after the first is rare).
_END_WRITES = 3


def _attempt_key(fax_id: str, attempt: int) -> str:
    return f"{fax_id}#{attempt}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _end_update(end: Doc) -> Doc:
    update: Doc = {"$set": end["set"], "$unset": {"busy_since": ""}}
    if end["failed"]:
        update["$inc"] = {"failed_attempts": 1}
    return update


class JobState(StrEnum):
    QUEUED = "queued"
    IN_CALL = "in_call"
    WAITING_RETRY = "waiting_retry"
    SENT = "sent"
    FAILED = "failed"


TERMINAL = (JobState.SENT, JobState.FAILED)


@dataclass(frozen=True, slots=True)
class ConfirmingCall:
    """The call that confirmed the job's last pages: its attempt, carrier, the document's
    page it began with, and when its header line was drawn."""

    attempt: int
    carrier_id: str
    first_page: int
    stamped_at: datetime

    def doc(self) -> Doc:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: Doc | None) -> ConfirmingCall | None:
        if not doc:
            return None
        return cls(
            attempt=int(doc["attempt"]),
            carrier_id=str(doc["carrier_id"]),
            first_page=int(doc["first_page"]),
            stamped_at=doc["stamped_at"],
        )


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
    pages_confirmed: int = 0  # of the whole document, by every call so far
    calls: int = 0  # calls that carried pages the far end confirmed
    confirming_call: ConfirmingCall | None = None

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
            pages_confirmed=int(doc.get("pages_confirmed", 0)),
            calls=len(doc.get("carried_by") or ()),
            confirming_call=ConfirmingCall.from_doc(doc.get("confirming_call")),
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

    async def confirm_pages(
        self, fax_id: str, worker_id: str, attempt: int, pages: int, call: ConfirmingCall
    ) -> bool:
        """``pages`` of the document are confirmed so far, the last by ``call`` (our
        attempt's, or an earlier one's whose count its job carried to us); False when
        the job is no longer ours."""
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
        self.ends = collection.database[ENDS_COLLECTION]

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
        if doc is None:
            return None
        job = Job.from_doc(doc)
        if job.state is JobState.IN_CALL:
            # Who dials is who won the attempt's insert: a claim's losers may have
            # written their own name into the job after the winner (see _take).
            job = replace(job, worker_id=await self._dialler(fax_id, job.attempt))
        return job

    async def _dialler(self, fax_id: str, attempt: int) -> str | None:
        claimed = await self.claims.find_one({"_id": _attempt_key(fax_id, attempt)})
        return None if claimed is None else claimed.get("worker_id")

    async def _ended(self, fax_id: str, attempt: int) -> bool:
        return (
            await self.ends.find_one({"_id": _attempt_key(fax_id, attempt)}, {"_id": 1}) is not None
        )

    async def claim(self, fax_id: str, worker_id: str, now: datetime, lease_s: float) -> Job | None:
        return await self._take(claimable_filter(fax_id, now), fax_id, worker_id, now, lease_s)

    async def _take(
        self, filter_: Doc, fax_id: str, worker_id: str, now: datetime, lease_s: float
    ) -> Job | None:
        lease_until = now + timedelta(seconds=lease_s)
        before = await self.collection.find_one_and_update(
            filter_,
            {
                "$set": {
                    "state": JobState.IN_CALL.value,
                    "worker_id": worker_id,
                    "lease_until": lease_until,
                    "updated_at": now,
                },
                "$inc": {"attempt": 1},
            },
            return_document=ReturnDocument.BEFORE,
        )
        if before is None:
            return None
        previous = Job.from_doc(before)
        job = replace(
            previous,
            state=JobState.IN_CALL,
            attempt=previous.attempt + 1,
            worker_id=worker_id,
            lease_until=lease_until,
        )
        # FerretDB v1 applies that conditional update as read-then-write, so several
        # workers can all "win" it, with the same new attempt number: unique inserts,
        # exclusive on every server, decide instead. Taking over a call whose lease ran
        # out ends that call's attempt, which its own worker (late, not dead) may be
        # ending at the same moment: an attempt's end is an insert too, so either that
        # worker's outcome counts or one taker's new attempt does, never both.
        if previous.state is JobState.IN_CALL and not await claim(
            self.ends, _attempt_key(fax_id, previous.attempt), by=worker_id, at=now
        ):
            await self._undo_our_take(fax_id, previous.attempt, worker_id)
            return None
        if not await claim(
            self.claims, _attempt_key(fax_id, job.attempt), worker_id=worker_id, claimed_at=now
        ):
            return None
        # A loser of the insert may have written its name after ours: put ours back.
        await self.collection.update_one(
            {"_id": fax_id, "attempt": job.attempt}, {"$set": {"worker_id": worker_id}}
        )
        return job

    def _on_the_line(self, fax_id: str, attempt: int) -> Doc:
        # Not by worker_id: the job's can be a claim's loser (see get); the attempt's
        # claim is what says whose the attempt is.
        return {"_id": fax_id, "state": JobState.IN_CALL.value, "attempt": attempt}

    async def renew(self, fax_id: str, worker_id: str, attempt: int, until: datetime) -> bool:
        if await self._dialler(fax_id, attempt) != worker_id:
            return False
        if await self._ended(fax_id, attempt):
            return False  # a taker ended it: our lease had run out
        result = await self.collection.update_one(
            self._on_the_line(fax_id, attempt),
            {"$set": {"lease_until": until, "worker_id": worker_id}},
        )
        return result.matched_count == 1

    async def confirm_pages(
        self, fax_id: str, worker_id: str, attempt: int, pages: int, call: ConfirmingCall
    ) -> bool:
        if await self._dialler(fax_id, attempt) != worker_id:
            return False
        # Only ever up: a page the far end confirmed stays confirmed.
        result = await self.collection.update_one(
            self._on_the_line(fax_id, attempt),
            {
                "$max": {"pages_confirmed": pages},
                "$addToSet": {"carried_by": call.attempt},
                "$set": {"confirming_call": call.doc()},
            },
        )
        return result.matched_count == 1

    async def finish(self, fax_id: str, worker_id: str, attempt: int, finish: Finish) -> bool:
        if await self._dialler(fax_id, attempt) != worker_id:
            return False
        fields: Doc = {
            "state": finish.state.value,
            "attempt": attempt,
            "worker_id": worker_id,
            "last_outcome": finish.last_outcome,
            "lease_until": None,
            "next_attempt_at": finish.next_attempt_at,
        }
        if finish.degrade is not None:
            fields["degrade"] = finish.degrade
        # The end keeps what it writes, for a taker that lost it to put back (below).
        end = {"set": fields, "failed": finish.failed}
        if not await claim(
            self.ends, _attempt_key(fax_id, attempt), by=worker_id, at=_utcnow(), end=end
        ):
            return False  # taken over once our lease ran out: the taker's attempt counts
        # By _id alone: the end is ours, and a taker that lost it may have moved the job
        # on to its attempt already (it writes the job before it inserts the end); its
        # write can even land just after ours (read-then-write): then write ours again.
        await self.collection.update_one({"_id": fax_id}, _end_update(end))
        for _ in range(_END_WRITES - 1):
            if not await self._moved_by_a_losing_taker(fax_id, attempt):
                break
            await self.collection.update_one({"_id": fax_id}, _end_update(end))
        return True

    async def _moved_by_a_losing_taker(self, fax_id: str, attempt: int) -> bool:
        doc = await self.collection.find_one({"_id": fax_id}, {"state": 1, "attempt": 1})
        return (
            doc is not None
            and (doc["state"], doc["attempt"]) == (JobState.IN_CALL.value, attempt + 1)
            and await self._dialler(fax_id, attempt + 1) is None
        )

    async def _undo_our_take(self, fax_id: str, ended: int, worker_id: str) -> None:
        """We lost the end of attempt ``ended`` after writing the job as ours: write back
        what its winner wrote (an attempt's end), or the winner's name (a takeover)."""
        won = await self.ends.find_one({"_id": _attempt_key(fax_id, ended)})
        if won is None:  # removed by hand
            return
        ours = {"_id": fax_id, "state": JobState.IN_CALL.value, "attempt": ended + 1}
        update = _end_update(won["end"]) if "end" in won else {"$set": {"worker_id": won["by"]}}
        await self.collection.update_one({**ours, "worker_id": worker_id}, update)

    async def put_back(
        self, fax_id: str, worker_id: str, attempt: int, retry_at: datetime, now: datetime
    ) -> bool:
        # The attempt was never made: free its number first (while the job is still ours
        # and nobody else can claim it), or the next claim would take the same number,
        # lose its insert and leave the job "on the line" with nobody calling.
        freed = await self.claims.delete_one(
            {"_id": _attempt_key(fax_id, attempt), "worker_id": worker_id}
        )
        if freed.deleted_count != 1:
            return False
        result = await self.collection.update_one(
            self._on_the_line(fax_id, attempt),
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
