"""Twelve OS processes, each with its own connection, racing round after round for a
transmitter job's first claim, for the takeover of a job whose worker died on the line,
and for the takeover of a mailbox lease whose holder died: exactly one process wins
each, every round, and the database agrees who."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from faxbox.mail_poller.lease import MailboxLease
from faxbox.transmitter.jobs import CLAIMS_COLLECTION, COLLECTION, MongoJobLedger
from tests.integration.races.conftest import CONTENDERS, Contenders

pytestmark = pytest.mark.integration

ROUNDS = 50
ROOT = Path(__file__).resolve().parents[3]


async def test_twelve_processes_one_wins_each_claim_and_each_takeover(
    contenders: Contenders,
) -> None:
    db = contenders.dbs[0]
    ledger = MongoJobLedger(db[COLLECTION])
    now = datetime.now(UTC)
    for round_ in range(ROUNDS):
        await ledger.ensure(f"new-{round_}", now)
        # Each round's other job was on the line with a worker that died.
        await ledger.ensure(f"dropped-{round_}", now)
        assert await ledger.claim(f"dropped-{round_}", "dead", now, 0.05) is not None
        # Each round's mailbox was held by a poller that died: its lease runs out.
        dead = MailboxLease(db, f"mbox-{round_}@faxbox.test", "dead", 0.05)
        assert await dead.try_acquire()
    await asyncio.sleep(0.1)

    racers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.races._racer_process",
            contenders.url,
            contenders.db_name,
            f"proc-{i:02d}",
            str(ROUNDS),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for i in range(CONTENDERS)
    ]
    try:
        for racer in racers:
            assert racer.stdout is not None
            async with asyncio.timeout(60):
                assert (await racer.stdout.readline()).strip() == b"ready"
        start_at = f"{time.time() + 0.5}\n".encode()
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.write(start_at)
            await racer.stdin.drain()
        async with asyncio.timeout(120):
            outputs = await asyncio.gather(*(racer.communicate() for racer in racers))
    finally:
        for racer in racers:
            if racer.returncode is None:
                racer.kill()
                await racer.wait()
    assert [racer.returncode for racer in racers] == [0] * CONTENDERS

    claimed: dict[int, list[str]] = {round_: [] for round_ in range(ROUNDS)}
    took_over: dict[int, list[str]] = {round_: [] for round_ in range(ROUNDS)}
    took: dict[int, list[str]] = {round_: [] for round_ in range(ROUNDS)}
    for i, (out, _) in enumerate(outputs):
        lines = [json.loads(line) for line in out.decode().splitlines()]
        assert len(lines) == ROUNDS, f"proc-{i:02d} ran {len(lines)} rounds"
        for line in lines:
            for field, winners in (("claimed", claimed), ("took_over", took_over)):
                if line[field] is not None:
                    winners[line["round"]].append(f"proc-{i:02d}")
            if line["took"]:
                took[line["round"]].append(f"proc-{i:02d}")
    for what, winners in (("claim", claimed), ("job takeover", took_over), ("lease", took)):
        assert {r: w for r, w in winners.items() if len(w) != 1} == {}, what
    claims = db[CLAIMS_COLLECTION]
    for round_ in range(ROUNDS):
        # The database agrees: one dialler per attempt, and it is the winner.
        assert await claims.count_documents({"_id": {"$regex": f"^new-{round_}#"}}) == 1
        new = await ledger.get(f"new-{round_}")
        assert new is not None
        assert (new.attempt, new.worker_id) == (1, claimed[round_][0])
        dropped = await ledger.get(f"dropped-{round_}")
        assert dropped is not None
        assert (dropped.attempt, dropped.worker_id) == (2, took_over[round_][0])
        lease = MailboxLease(db, f"mbox-{round_}@faxbox.test", "reader", 60)
        current = await lease.lease.current()
        assert current is not None
        assert (current["generation"], current["holder"]) == (2, took[round_][0])
