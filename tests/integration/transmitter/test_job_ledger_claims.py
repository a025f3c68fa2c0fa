"""The job ledger's claim on the real MongoDB-wire server, with workers racing for it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from pymongo import AsyncMongoClient

from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Store
from faxbox.transmitter.jobs import COLLECTION, Finish, JobState, MongoJobLedger

pytestmark = pytest.mark.integration

WORKERS = 12


async def test_only_one_of_many_racing_workers_may_dial_an_attempt(
    store: Store, mongo_settings: MongoSettings
) -> None:
    pool: list[AsyncMongoClient[dict[str, object]]] = [
        AsyncMongoClient(mongo_settings.mongo_url) for _ in range(4)
    ]
    try:
        ledgers = [
            MongoJobLedger(pool[i % 4][mongo_settings.mongo_db][COLLECTION]) for i in range(WORKERS)
        ]
        for round_ in range(5):
            fax_id = f"fax-race-{round_}"
            now = datetime.now(UTC)
            await ledgers[0].ensure(fax_id, now)
            claimed = await asyncio.gather(
                *(ledger.claim(fax_id, f"w{i}", now, 60) for i, ledger in enumerate(ledgers))
            )
            winners = [job for job in claimed if job is not None]
            assert len(winners) == 1, f"round {round_}: {len(winners)} workers may dial"
    finally:
        for client in pool:
            await client.close()


async def test_a_job_put_back_for_busy_channels_can_be_claimed_again_at_once(
    store: Store,
) -> None:
    """Putting a claim back (every channel busy) is not an attempt: the next claim gets
    the same attempt number, and must not find that attempt's claim still taken (the job
    then sat 'on the line' with nobody calling until its lease ran out)."""
    ledger = MongoJobLedger(store.db[COLLECTION])
    fax_id = "fax-put-back"
    now = datetime.now(UTC)
    await ledger.ensure(fax_id, now)
    first = await ledger.claim(fax_id, "w1", now, 60)
    assert first is not None
    assert await ledger.put_back(fax_id, "w1", first.attempt, now, now)
    again = await ledger.claim(fax_id, "w2", datetime.now(UTC), 60)
    assert again is not None
    assert again.attempt == first.attempt


async def test_a_cancel_and_a_redial_racing_for_a_waiting_job_never_both_win(
    store: Store, mongo_settings: MongoSettings
) -> None:
    """A cancel between calls takes the next attempt as a redial does, by the same insert:
    half the workers redial, half cancel, and exactly one of them has the job."""
    pool: list[AsyncMongoClient[dict[str, object]]] = [
        AsyncMongoClient(mongo_settings.mongo_url) for _ in range(4)
    ]
    try:
        ledgers = [
            MongoJobLedger(pool[i % 4][mongo_settings.mongo_db][COLLECTION]) for i in range(WORKERS)
        ]
        for round_ in range(5):
            fax_id = f"fax-cancel-race-{round_}"
            now = datetime.now(UTC)
            await ledgers[0].ensure(fax_id, now)
            first = await ledgers[0].claim(fax_id, "w-first", now, 60)
            assert first is not None
            waiting = Finish(JobState.WAITING_RETRY, {"success": False}, next_attempt_at=now)
            assert await ledgers[0].finish(fax_id, "w-first", first.attempt, waiting)
            later = datetime.now(UTC)
            taken = await asyncio.gather(
                *(
                    ledger.claim_cancel(fax_id, f"w{i}", later, 60)
                    if i % 2
                    else ledger.claim(fax_id, f"w{i}", later, 60)
                    for i, ledger in enumerate(ledgers)
                )
            )
            winners = [job for job in taken if job is not None]
            assert len(winners) == 1, f"round {round_}: {len(winners)} workers took the job"
            assert winners[0].attempt == first.attempt + 1
    finally:
        for client in pool:
            await client.close()
