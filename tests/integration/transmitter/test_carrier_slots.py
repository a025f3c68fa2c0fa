"""Carrier channel slots on the real MongoDB-wire server: the cap, shared by replicas."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Carrier, Store
from faxbox.transmitter.adapters import MongoCarrierSlots
from faxbox.transmitter.carriers import COLLECTION

pytestmark = pytest.mark.integration


class CommandCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def carrier(cap: int) -> Carrier:
    return Carrier(name=f"c-{uuid.uuid4().hex[:6]}", flags=["fax"], channel_cap=cap, sip_host="x")


async def test_replicas_never_hold_more_channels_than_the_cap(
    store: Store, mongo_settings: MongoSettings
) -> None:
    clients: list[AsyncMongoClient[dict[str, Any]]] = [
        AsyncMongoClient(mongo_settings.mongo_url) for _ in range(3)
    ]
    try:
        replicas = [MongoCarrierSlots(c[mongo_settings.mongo_db][COLLECTION]) for c in clients]
        line = carrier(4)
        now = datetime.now(UTC)
        held = await asyncio.gather(
            *(replicas[i % 3].acquire([line], f"call{i}", now, 60) for i in range(12))
        )
        taken = [slot for slot in held if slot is not None]
        assert len(taken) == 4
        assert len({slot.key for slot in taken}) == 4
        # A released channel is free again for any replica.
        owner = replicas[held.index(taken[0]) % 3]
        await owner.release(taken[0])
        again = await replicas[(held.index(taken[0]) + 1) % 3].acquire([line], "late", now, 60)
        assert again is not None
        assert again.key == taken[0].key
    finally:
        for client in clients:
            await client.close()


async def test_a_replica_does_not_ask_the_database_about_its_own_busy_channels(
    mongo_settings: MongoSettings, store: Store
) -> None:
    counter = CommandCounter()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_settings.mongo_url, event_listeners=[counter]
    )
    try:
        slots = MongoCarrierSlots(client[mongo_settings.mongo_db][COLLECTION])
        line = carrier(5)
        now = datetime.now(UTC)
        for n in range(5):
            assert await slots.acquire([line], f"call{n}", now, 60) is not None
        counter.commands.clear()
        assert await slots.acquire([line], "one-too-many", now, 60) is None
        assert counter.commands == []
    finally:
        await client.close()
