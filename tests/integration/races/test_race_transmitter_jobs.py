"""Twelve transmitter workers racing for one fax's job on the real database, round after
round through a job's whole life: the first claim, a takeover after the holder's lease
ran out, the holder's end racing the takers, a redial racing cancels, a put-back. Each
round exactly one worker may dial (or end) the attempt, and once a job is taken over
only the new holder's writes count."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import pytest

from faxbox.transmitter.jobs import (
    CLAIMS_COLLECTION,
    COLLECTION,
    Finish,
    Job,
    JobState,
    MongoJobLedger,
)
from tests.integration.races.conftest import CONTENDERS, Contenders

pytestmark = pytest.mark.integration

LIFECYCLES = 10  # five rounds each: fifty rounds
LEASE_S = 60.0


def worker(i: int) -> str:
    return f"w{i:02d}"


def the_one(results: list[Job | None], what: str) -> tuple[int, Job]:
    winners = [(i, job) for i, job in enumerate(results) if job is not None]
    assert len(winners) == 1, f"{what}: {[(worker(i), j.attempt) for i, j in winners]} took it"
    return winners[0]


async def race(calls: list[Awaitable[Job | None]]) -> list[Job | None]:
    return list(await asyncio.gather(*calls))


async def test_twelve_workers_one_takes_each_attempt_and_only_the_holder_writes(
    contenders: Contenders,
) -> None:
    ledgers = [MongoJobLedger(db[COLLECTION]) for db in contenders.dbs]
    claims = contenders.dbs[0][CLAIMS_COLLECTION]
    for life in range(LIFECYCLES):
        fax = f"fax_race_{life}"
        now = datetime.now(UTC)
        await ledgers[0].ensure(fax, now)

        # 1. The first claim of a queued job.
        first_i, first = the_one(
            await race([ledgers[i].claim(fax, worker(i), now, LEASE_S) for i in range(CONTENDERS)]),
            f"{fax} first claim",
        )
        assert first.attempt == 1
        # The winner's call keeps its lease, whoever of the losers wrote the job last.
        assert await ledgers[first_i].renew(
            fax, worker(first_i), 1, now + timedelta(seconds=LEASE_S)
        ), f"{fax}: the dialling worker lost its lease to a loser of the claim"

        # 2. Its worker died: past its lease everybody tries, one takes the next attempt.
        later = now + timedelta(seconds=LEASE_S + 1)
        taker_i, taken = the_one(
            await race(
                [ledgers[i].claim(fax, worker(i), later, LEASE_S) for i in range(CONTENDERS)]
            ),
            f"{fax} takeover",
        )
        assert taken.attempt == 2
        # Ownership: the old holder's (and everybody else's) writes no longer count.
        until = later + timedelta(seconds=LEASE_S)
        renewed = await asyncio.gather(
            *(ledgers[i].renew(fax, worker(i), 1, until) for i in range(CONTENDERS)),
            *(ledgers[i].renew(fax, worker(i), 2, until) for i in range(CONTENDERS)),
        )
        assert [i for i, ok in enumerate(renewed) if ok] == [CONTENDERS + taker_i]
        stale_end = Finish(JobState.SENT, {"success": True})
        assert not await ledgers[first_i].finish(fax, worker(first_i), 1, stale_end)

        # 3. The holder ends its attempt just as its lease runs out, while the others
        # take the job over: either the end counts or one takeover does, never both.
        expiry = until + timedelta(seconds=1)
        waiting = Finish(
            JobState.WAITING_RETRY,
            {"success": False},
            next_attempt_at=expiry + timedelta(hours=1),
        )
        ends = await asyncio.gather(
            *(
                ledgers[i].finish(fax, worker(i), 2, waiting)
                if i == taker_i
                else ledgers[i].claim(fax, worker(i), expiry, LEASE_S)
                for i in range(CONTENDERS)
            )
        )
        ended = ends[taker_i] is True
        takers = [(i, j) for i, j in enumerate(ends) if i != taker_i and isinstance(j, Job)]
        assert ended + len(takers) == 1, (
            f"{fax}: holder's end counted: {ended}; takers: {[worker(i) for i, _ in takers]}"
        )
        job = await ledgers[0].get(fax)
        assert job is not None
        if ended:
            assert (job.state, job.attempt) == (JobState.WAITING_RETRY, 2)
            holder_i, attempt = taker_i, 2
        else:
            holder_i, attempt = takers[0][0], 3
            assert (job.state, job.worker_id, job.attempt) == (
                JobState.IN_CALL,
                worker(holder_i),
                3,
            )
            due = Finish(JobState.WAITING_RETRY, {"success": False}, next_attempt_at=expiry)
            assert await ledgers[holder_i].finish(fax, worker(holder_i), 3, due)

        # 4. The redial is due: half the workers redial, half cancel; one takes it.
        due_at = expiry + timedelta(hours=2)
        redial_i, redialled = the_one(
            await race(
                [
                    ledgers[i].claim_cancel(fax, worker(i), due_at, LEASE_S)
                    if i % 2
                    else ledgers[i].claim(fax, worker(i), due_at, LEASE_S)
                    for i in range(CONTENDERS)
                ]
            ),
            f"{fax} redial or cancel",
        )
        assert redialled.attempt == attempt + 1

        # 5. Every channel was busy: the claim goes back, and the same attempt is taken
        # again by exactly one.
        assert await ledgers[redial_i].put_back(
            fax, worker(redial_i), redialled.attempt, due_at, due_at
        )
        _, again = the_one(
            await race(
                [ledgers[i].claim(fax, worker(i), due_at, LEASE_S) for i in range(CONTENDERS)]
            ),
            f"{fax} claim after put-back",
        )
        assert again.attempt == redialled.attempt

        # One dialler per attempt number, on record.
        recorded = [doc["_id"] async for doc in claims.find({"_id": {"$regex": f"^{fax}#"}})]
        assert sorted(recorded) == [f"{fax}#{n}" for n in range(1, again.attempt + 1)]


async def test_a_late_end_and_eleven_takeovers_one_counts_and_the_job_says_which(
    contenders: Contenders,
) -> None:
    """Fifty times: a worker ends its call just as its lease runs out and the eleven
    others take the job over. Either its end counts and the job shows that end, or one
    taker's attempt counts and the job shows that attempt; the losers' writes to the job
    (FerretDB applies a conditional write as read-then-write) are undone."""
    ledgers = [MongoJobLedger(db[COLLECTION]) for db in contenders.dbs]
    holder = 0
    for round_ in range(50):
        fax = f"fax_late_end_{round_}"
        now = datetime.now(UTC)
        await ledgers[0].ensure(fax, now)
        assert await ledgers[holder].claim(fax, worker(holder), now, LEASE_S) is not None
        expired = now + timedelta(seconds=LEASE_S + 1)
        sent = Finish(JobState.SENT, {"success": True, "round": round_})
        ends = await asyncio.gather(
            *(
                ledgers[i].finish(fax, worker(i), 1, sent)
                if i == holder
                else ledgers[i].claim(fax, worker(i), expired, LEASE_S)
                for i in range(CONTENDERS)
            )
        )
        takers = [i for i, j in enumerate(ends) if i != holder and isinstance(j, Job)]
        job = await ledgers[0].get(fax)
        assert job is not None
        if ends[holder] is True:
            assert takers == [], f"round {round_}: sent, and {takers} dial it again"
            assert (job.state, job.attempt, job.last_outcome) == (
                JobState.SENT,
                1,
                {"success": True, "round": round_},
            ), f"round {round_}: the end counted but the job says {job}"
        else:
            assert len(takers) == 1, f"round {round_}: {takers} took the job over"
            assert (job.state, job.attempt, job.worker_id) == (
                JobState.IN_CALL,
                2,
                worker(takers[0]),
            )
        holder = (holder + 1) % CONTENDERS
