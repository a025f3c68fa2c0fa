"""One contender of the cross-process race (``test_race_processes``): its own process,
its own connection. It says ``ready`` once connected, waits for the start time on stdin,
then at each round's moment claims the round's new transmitter job, tries to take over
the round's job whose worker died and the round's expired mailbox lease, printing one
JSON line per round with what it got."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient

from faxbox.mail_poller.lease import MailboxLease
from faxbox.transmitter.jobs import COLLECTION, MongoJobLedger

STEP_S = 0.25
LEASE_S = 60.0


async def race(url: str, db_name: str, me: str, rounds: int) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        db = client[db_name]
        await db.command("ping")
        print("ready", flush=True)
        start_at = float(await asyncio.to_thread(sys.stdin.readline))
        ledger = MongoJobLedger(db[COLLECTION])
        for round_ in range(rounds):
            await asyncio.sleep(max(0.0, start_at + round_ * STEP_S - time.time()))
            now = datetime.now(UTC)
            new = await ledger.claim(f"new-{round_}", me, now, LEASE_S)
            dropped = await ledger.claim(f"dropped-{round_}", me, now, LEASE_S)
            lease = MailboxLease(db, f"mbox-{round_}@faxbox.test", me, LEASE_S)
            took = await lease.try_acquire()
            line = {
                "round": round_,
                "claimed": None if new is None else new.attempt,
                "took_over": None if dropped is None else dropped.attempt,
                "took": took,
            }
            print(json.dumps(line), flush=True)
    finally:
        await client.close()


if __name__ == "__main__":
    url, db_name, me, rounds = sys.argv[1:5]
    asyncio.run(race(url, db_name, me, int(rounds)))
