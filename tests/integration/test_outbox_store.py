"""The exactly-once toolkit on the real FerretDB and RabbitMQ: races, owed keys, sweeps."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient

from faxbox.shared.bus import Bus
from faxbox.shared.contracts import MailReceived, NotificationKind, NotificationSent
from faxbox.shared.outbox import Decided, Outbox
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Store
from faxbox.shared.store.decisions import MongoDecisionStore
from faxbox.shared.testing import MemoryPublisher
from tests.support import sample_mail_received as mail

pytestmark = pytest.mark.integration

RACERS = 12


def note(fax_id: str) -> NotificationSent:
    return NotificationSent(
        fax_id=fax_id,
        account_id="acc1",
        month="202611",
        kind=NotificationKind.sent,
        recipients=("alice@example.com",),
        smtp_message_id=f"<{fax_id}@faxbox.test>",
    )


def decisions(store: Store) -> MongoDecisionStore:
    return MongoDecisionStore(store.db, f"t{uuid.uuid4().hex[:8]}")


async def test_a_decision_is_kept_by_key_and_owed_until_forgotten(store: Store) -> None:
    db = decisions(store)
    await db.ensure_indexes()
    first, second = note("fax_a"), note("fax_b")
    recorded = await db.record(Decided("mail-1", (first, second)))
    assert (recorded.messages, recorded.owed) == ((first, second), True)
    got = await db.get("mail-1")
    assert got is not None
    assert (got.messages, got.owed) == ((first, second), True)
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert [r.key for r in await db.owed(later)] == ["mail-1"]
    await db.forget("mail-1")
    got = await db.get("mail-1")
    assert got is not None
    assert (got.messages, got.owed) == ((first, second), False)
    assert await db.owed(later) == []
    assert await db.get("mail-2") is None


async def test_twelve_contenders_for_one_key_all_get_the_one_decision_that_stands(
    store: Store, mongo_settings: MongoSettings
) -> None:
    # Separate connections, as separate replicas would have.
    pool = [AsyncMongoClient[dict[str, object]](mongo_settings.mongo_url) for _ in range(4)]
    name = f"t{uuid.uuid4().hex[:8]}"
    try:
        for round_ in range(5):
            key = f"mail-{uuid.uuid4().hex}"
            stores = [
                MongoDecisionStore(pool[i % 4][mongo_settings.mongo_db], name)
                for i in range(RACERS)
            ]
            mine = [note(f"fax_{i}") for i in range(RACERS)]
            results = await asyncio.gather(
                *(s.record(Decided(key, (m,))) for s, m in zip(stores, mine, strict=True))
            )
            standing = {r.messages for r in results}
            assert len(standing) == 1, f"round {round_}: {len(standing)} decisions stand"
            (messages,) = standing
            assert messages[0] in mine
            stored = await stores[0].get(key)
            assert stored is not None
            assert stored.messages == messages
            later = datetime.now(UTC) + timedelta(seconds=1)
            assert [r.key for r in await stores[0].owed(later) if r.key == key] == [key]
    finally:
        for client in pool:
            await client.close()


async def test_a_late_duplicate_of_a_confirmed_decision_owes_nothing(store: Store) -> None:
    db = decisions(store)
    first = note("fax_1")
    await db.record(Decided("mail-9", (first,)))
    await db.forget("mail-9")  # published and confirmed
    late = await db.record(Decided("mail-9", (note("fax_2"),)))
    assert (late.messages, late.owed) == ((first,), False)
    assert await db.owed(datetime.now(UTC) + timedelta(seconds=1)) == []
    # While the first is still owed, a second handling sees it owed and publishes it too.
    await db.record(Decided("mail-10", (first,)))
    again = await db.record(Decided("mail-10", (note("fax_2"),)))
    assert (again.messages, again.owed) == ((first,), True)


async def test_an_owed_key_without_a_decision_is_dropped_once_abandoned(store: Store) -> None:
    db = decisions(store)
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    # What a process that died between its two inserts leaves behind.
    await db.outbox.insert_one({"_id": "orphan", "owed_since": long_ago})
    await db.outbox.insert_one({"_id": "young", "owed_since": datetime.now(UTC)})
    assert await db.owed(datetime.now(UTC) + timedelta(seconds=1)) == []
    assert await db.outbox.find_one({"_id": "orphan"}) is None
    assert await db.outbox.find_one({"_id": "young"}) is not None


async def test_a_sweep_sends_what_a_dead_process_owed(store: Store) -> None:
    db = decisions(store)
    publisher = MemoryPublisher()
    box = Outbox(db, publisher)
    publisher.failures.append(ConnectionError("the broker went away"))
    message = note("fax_1")
    with pytest.raises(ConnectionError):
        await box.emit(Decided("k", (message,)))
    assert await box.sweep(grace_s=60) == 0
    await db.outbox.update_one(
        {"_id": "k"}, {"$set": {"owed_since": datetime.now(UTC) - timedelta(minutes=5)}}
    )
    assert await box.sweep(grace_s=60) == 1
    assert publisher.published == [message]
    got = await db.get("k")
    assert got is not None
    assert not got.owed


# --- with the real broker ------------------------------------------------------------------


@pytest.fixture
async def bus(broker_settings: BrokerSettings) -> AsyncIterator[Bus]:
    b = Bus(broker_settings)
    await b.connect()
    for service in ("validator", "history"):
        await b.declare_service(service)
    yield b
    await b.close()


async def drain(bus: Bus, service: str, within_s: float = 10.0) -> list[str]:
    """Message ids on a service's queue, waiting until at least one came."""
    channel = await bus.connection.channel()
    queue = await channel.get_queue(bus.topology.queue(service))
    ids: list[str] = []
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        incoming = await queue.get(no_ack=True, fail=False)
        if incoming is not None:
            ids.append(str(incoming.message_id))
            continue
        if ids:
            break
        await asyncio.sleep(0.05)
    await channel.close()
    return ids


async def test_a_consumer_decision_goes_out_once_per_handling_with_the_same_ids(
    store: Store, bus: Bus
) -> None:
    """The validator's shape: a MailReceived decided into two messages for history."""
    box = Outbox(decisions(store), bus)
    handled = asyncio.Event()
    handlings: list[int] = []

    async def decide(message: MailReceived) -> Decided:
        handlings.append(message.uid)
        earlier = await box.get(message.fax_id)
        if earlier is not None:
            handled.set()
            return earlier
        return Decided(message.fax_id, (note(f"{message.fax_id}-a"), note(f"{message.fax_id}-b")))

    consumer = bus.consumer("validator", {MailReceived: box.consuming(decide)})
    await consumer.start()
    try:
        received = mail(3)
        await bus.publish(received)
        first = await drain(bus, "history")
        await bus.publish(received)  # the same mail again: a redelivery
        await asyncio.wait_for(handled.wait(), 10)
        second = await drain(bus, "history")
    finally:
        await consumer.stop()
    assert len(first) == 2
    assert second == first
    assert handlings == [3, 3]
    recorded = await box.get(received.fax_id)
    assert recorded is not None
    assert not recorded.owed
