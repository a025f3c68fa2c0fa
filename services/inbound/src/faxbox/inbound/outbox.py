"""Events the receiver owes the bus, kept in the database until the broker confirmed them.

A received fax is stored, then its event is written here, then published, then the
entry removed. If the process dies (or the broker is away) in between, a sweeper —
in this replica or any other — publishes what is left, so a fax that arrived is
always announced. A sweep racing the original publish only repeats the same message
(same ``message_id``), which every consumer treats as a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from faxbox.shared.contracts import Message, contract_by_name

log = logging.getLogger(__name__)

Doc = dict[str, Any]

COLLECTION = "inbound_outbox"


class Publisher(Protocol):
    async def publish(self, message: Message) -> None: ...


class Outbox(Protocol):
    async def add(self, message: Message) -> None: ...

    async def remove(self, message: Message) -> None: ...

    async def pending(self, older_than: datetime) -> list[Message]: ...


class MongoOutbox:
    def __init__(self, collection: AsyncCollection[Doc]) -> None:
        self.collection = collection

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("created_at", ASCENDING)], name="created_at")

    async def add(self, message: Message) -> None:
        await self.collection.replace_one(
            {"_id": message.message_id},
            {
                "_id": message.message_id,
                "type": type(message).__name__,
                "body": message.model_dump_json(),
                "created_at": datetime.now(UTC),
            },
            upsert=True,
        )

    async def remove(self, message: Message) -> None:
        await self.collection.delete_one({"_id": message.message_id})

    async def pending(self, older_than: datetime) -> list[Message]:
        cursor = self.collection.find({"created_at": {"$lt": older_than}}).sort(
            "created_at", ASCENDING
        )
        return [contract_by_name(d["type"]).model_validate_json(d["body"]) async for d in cursor]


async def deliver(outbox: Outbox, publisher: Publisher, message: Message) -> None:
    """Keep it, publish it, forget it; a failed publish stays for the sweeper."""
    await outbox.add(message)
    try:
        await publisher.publish(message)
    except Exception:
        log.exception("could not publish %s; the sweeper will", type(message).__name__)
        return
    await outbox.remove(message)


async def sweep(outbox: Outbox, publisher: Publisher, grace_s: float) -> int:
    """Publish what has waited longer than ``grace_s``; returns how many went out."""
    sent = 0
    for message in await outbox.pending(datetime.now(UTC) - timedelta(seconds=grace_s)):
        await publisher.publish(message)
        await outbox.remove(message)
        sent += 1
    if sent:
        log.warning("published %d event(s) left over from an earlier failure", sent)
    return sent


async def sweep_forever(
    outbox: Outbox, publisher: Publisher, interval_s: float, grace_s: float
) -> None:
    while True:
        try:
            await sweep(outbox, publisher, grace_s)
        except Exception:
            log.exception("outbox sweep failed; trying again next interval")
        await asyncio.sleep(interval_s)
