"""The job ledger's claim on the real MongoDB-wire server, with workers racing for it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from pymongo import AsyncMongoClient

from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Store
from faxbox.transmitter.jobs import COLLECTION, MongoJobLedger

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
