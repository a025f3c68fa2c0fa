"""Exclusive claims and leases on the real MongoDB-wire server, under concurrency."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient

from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Store
from faxbox.shared.store.claims import GenerationLease, claim

pytestmark = pytest.mark.integration

RACERS = 12


async def clients(settings: MongoSettings, n: int) -> list[AsyncMongoClient[dict[str, object]]]:
    # Separate connections, as separate processes would have.
    return [AsyncMongoClient(settings.mongo_url) for _ in range(n)]


async def test_exactly_one_concurrent_claim_wins(
    store: Store, mongo_settings: MongoSettings
) -> None:
    pool = await clients(mongo_settings, 4)
    try:
        for round_ in range(5):
            key = f"job-{uuid.uuid4().hex}"
            results = await asyncio.gather(
                *(
                    claim(pool[i % 4][mongo_settings.mongo_db]["claims"], key, racer=i)
                    for i in range(RACERS)
                )
            )
            assert sum(results) == 1, f"round {round_}: {results}"
    finally:
        for client in pool:
            await client.close()


async def test_exactly_one_concurrent_lease_taker_wins(
    store: Store, mongo_settings: MongoSettings
) -> None:
    pool = await clients(mongo_settings, 4)
    name = f"mailbox-{uuid.uuid4().hex[:8]}"
    try:
        leases = [
            GenerationLease(
                pool[i % 4][mongo_settings.mongo_db]["leases"], name, timedelta(seconds=30)
            )
            for i in range(RACERS)
        ]
        await leases[0].ensure_indexes()
        held = await asyncio.gather(*(lease.acquire(f"r{i}") for i, lease in enumerate(leases)))
        winners = [h for h in held if h is not None]
        assert len(winners) == 1
        assert winners[0].generation == 1
        # The winner renews; nobody else can take it while it is valid.
        renewed = await leases[0].renew(winners[0])
        assert renewed is not None
        again = await asyncio.gather(
            *(lease.acquire(f"other{i}") for i, lease in enumerate(leases))
        )
        assert [h for h in again if h is not None and h.holder.startswith("other")] == []
    finally:
        for client in pool:
            await client.close()


async def test_expired_lease_is_taken_once_and_the_old_holder_learns_it(store: Store) -> None:
    name = f"mailbox-{uuid.uuid4().hex[:8]}"
    short = GenerationLease(store.db["leases"], name, timedelta(milliseconds=300))
    first = await short.acquire("a")
    assert first is not None
    assert await short.acquire("b") is None
    await asyncio.sleep(0.4)
    takers = await asyncio.gather(*(short.acquire(f"t{i}") for i in range(RACERS)))
    won = [h for h in takers if h is not None]
    assert len(won) == 1
    assert won[0].generation == first.generation + 1
    assert not await short.still_held(first)
    assert await short.renew(first) is None


async def test_released_lease_can_be_taken_at_once(store: Store) -> None:
    name = f"mailbox-{uuid.uuid4().hex[:8]}"
    lease = GenerationLease(store.db["leases"], name, timedelta(seconds=60))
    held = await lease.acquire("a")
    assert held is not None
    await lease.release(held)
    successor = await lease.acquire("b")
    assert successor is not None
    assert successor.holder == "b"
    assert successor.generation == held.generation + 1


def test_lease_names_cannot_contain_the_separator(store: Store) -> None:
    with pytest.raises(ValueError, match="#"):
        GenerationLease(store.db["leases"], "a#b", timedelta(seconds=1))


async def test_a_stale_head_is_corrected_by_probing_forward(store: Store) -> None:
    """A taker that died between its take and the head update must not let a generation
    be taken twice."""
    name = f"slot-{uuid.uuid4().hex[:8]}"
    leases = store.db["leases"]
    lease = GenerationLease(leases, name, timedelta(seconds=60))
    first = await lease.acquire("a")
    assert first is not None
    await lease.release(first)
    second = await lease.acquire("b")
    assert second is not None
    # The head still says generation 1, as if b had died right after its insert.
    await leases.update_one({"_id": name}, {"$set": {"generation": 1}})
    assert await lease.acquire("c") is None  # b holds generation 2
    await lease.release(second)
    third = await lease.acquire("c")
    assert third is not None
    assert third.generation == 3
    assert not await lease.still_held(second)


async def test_a_lease_taken_before_heads_existed_is_found_by_name(store: Store) -> None:
    name = f"slot-{uuid.uuid4().hex[:8]}"
    leases = store.db["leases"]
    lease = GenerationLease(leases, name, timedelta(seconds=60))
    now = datetime.now(UTC)
    # What an older version left: generation 7 held until a minute from now, no head.
    await leases.insert_one(
        {
            "_id": f"{name}#{7:012d}",
            "name": name,
            "generation": 7,
            "holder": "old",
            "acquired_at": now,
            "expires_at": now + timedelta(seconds=60),
        }
    )
    assert await lease.acquire("new") is None
    await leases.update_one(
        {"_id": f"{name}#{7:012d}"}, {"$set": {"expires_at": now - timedelta(seconds=1)}}
    )
    taken = await lease.acquire("new")
    assert taken is not None
    assert taken.generation == 8


async def test_the_chain_stays_short(store: Store) -> None:
    name = f"slot-{uuid.uuid4().hex[:8]}"
    leases = store.db["leases"]
    lease = GenerationLease(leases, name, timedelta(seconds=60))
    for n in range(8):
        held = await lease.acquire(f"h{n}")
        assert held is not None
        assert held.generation == n + 1
        await lease.release(held)
    generations = sorted([d["generation"] async for d in leases.find({"name": name})])
    assert generations == [6, 7, 8]


async def test_a_value_set_by_the_first_holder_is_inherited_and_expiry_told_from_release(
    store: Store,
) -> None:
    name = f"mail-{uuid.uuid4().hex[:8]}"
    leases = store.db["leases"]
    lease = GenerationLease(leases, name, timedelta(milliseconds=300), headless_chains=False)
    first = await lease.acquire("a", carry={"message_id": "<first@x>"})
    assert first is not None
    assert (first.generation, first.carried, first.after_expiry) == (
        1,
        {"message_id": "<first@x>"},
        False,
    )
    # A first take writes no head: the chain starts at generation 1.
    assert await leases.find_one({"_id": name}) is None
    await lease.release(first)
    second = await lease.acquire("b", carry={"message_id": "<second@x>"})
    assert second is not None
    assert (second.generation, second.carried, second.after_expiry) == (
        2,
        {"message_id": "<first@x>"},
        False,
    )
    await asyncio.sleep(0.4)  # b dies holding it
    third = await lease.acquire("c", carry={"message_id": "<third@x>"})
    assert third is not None
    assert (third.generation, third.carried, third.after_expiry) == (
        3,
        {"message_id": "<first@x>"},
        True,
    )
    renewed = await lease.renew(third)
    assert renewed is not None
    assert (renewed.carried, renewed.after_expiry) == (third.carried, True)


async def test_twelve_takers_of_a_new_lease_family_one_wins_each_time(
    store: Store, mongo_settings: MongoSettings
) -> None:
    pool = await clients(mongo_settings, 4)
    name = f"mail-{uuid.uuid4().hex[:8]}"
    try:
        leases = [
            GenerationLease(
                pool[i % 4][mongo_settings.mongo_db]["leases"],
                name,
                timedelta(milliseconds=300),
                headless_chains=False,
            )
            for i in range(RACERS)
        ]
        for generation in (1, 2, 3, 4):
            held = await asyncio.gather(
                *(lease.acquire(f"r{i}", carry={"first": i}) for i, lease in enumerate(leases))
            )
            winners = [h for h in held if h is not None]
            assert len(winners) == 1, f"generation {generation}: {len(winners)} holders"
            assert winners[0].generation == generation
            if generation == 1:
                first = winners[0].carried
            assert winners[0].carried == first
            await asyncio.sleep(0.4)  # the holder dies; everybody tries again
    finally:
        for client in pool:
            await client.close()
