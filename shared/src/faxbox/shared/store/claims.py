"""Claims and leases that stay exclusive on FerretDB v1 as well as on MongoDB.

Measured here: FerretDB v1 (SQLite backend) runs ``findAndModify`` and conditional
``update``/``delete`` as a query followed by a write by ``_id``, with no transaction in
between. Twelve concurrent ``find_one_and_update({"n": {"$lt": 5}}, {"$inc": {"n": 1}})``
calls all report success and the counter ends below 5. The one write it does make
exclusive is inserting a document whose ``_id`` already exists. So every "only one of
you may do this" decision here is the insert of a unique ``_id``:

- ``claim(collection, key)``: the first caller to insert ``_id=key`` wins, forever.
- ``GenerationLease``: a lease is a chain of documents ``<name>#<generation>``. The
  holder renews its own generation's expiry; a taker may only insert the *next*
  generation once the current one has expired, and only one taker can insert it. The
  generation number is a fencing token: a holder that finds a newer generation has lost
  the lease, whatever its clock says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

Doc = dict[str, Any]

_GENERATION_DIGITS = 12


async def claim(collection: AsyncCollection[Doc], key: str, **fields: Any) -> bool:
    """Insert ``{_id: key, **fields}``; True if this call created it, False if it existed."""
    try:
        await collection.insert_one({"_id": key, **fields})
    except DuplicateKeyError:
        return False
    return True


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Held:
    """A lease this process holds: its generation is the fencing token."""

    name: str
    generation: int
    holder: str
    expires_at: datetime


class GenerationLease:
    """An exclusive, expiring lease on ``name`` for one holder at a time."""

    def __init__(self, collection: AsyncCollection[Doc], name: str, ttl: timedelta) -> None:
        if "#" in name:
            raise ValueError("a lease name may not contain '#'")
        self.collection = collection
        self.name = name
        self.ttl = ttl

    def _id(self, generation: int) -> str:
        return f"{self.name}#{generation:0{_GENERATION_DIGITS}d}"

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("name", 1), ("generation", DESCENDING)])

    async def current(self) -> Doc | None:
        return await self.collection.find_one(
            {"name": self.name}, sort=[("generation", DESCENDING)]
        )

    async def acquire(self, holder: str) -> Held | None:
        """Take the lease if it is free or expired, or renew it if ``holder`` has it."""
        now = _now()
        latest = await self.current()
        if latest is not None:
            expires_at = _aware(latest["expires_at"])
            if latest["holder"] == holder and expires_at > now:
                return await self.renew(
                    Held(self.name, int(latest["generation"]), holder, expires_at)
                )
            if expires_at > now:
                return None
        generation = 1 if latest is None else int(latest["generation"]) + 1
        expires_at = now + self.ttl
        taken = await claim(
            self.collection,
            self._id(generation),
            name=self.name,
            generation=generation,
            holder=holder,
            acquired_at=now,
            expires_at=expires_at,
        )
        if not taken:
            return None
        await self._forget_before(generation)
        return Held(self.name, generation, holder, expires_at)

    async def renew(self, held: Held) -> Held | None:
        """Extend our generation; None once it expired or a newer generation exists."""
        now = _now()
        if held.expires_at <= now:
            return None
        expires_at = now + self.ttl
        # Only the holder writes its own generation's document, so this needs no
        # atomic condition; what matters is the check for a newer generation after it.
        await self.collection.update_one(
            {"_id": self._id(held.generation)}, {"$set": {"expires_at": expires_at}}
        )
        if not await self.still_held(held):
            return None
        return Held(held.name, held.generation, held.holder, expires_at)

    async def still_held(self, held: Held) -> bool:
        """True while no newer generation exists and ours has not expired."""
        if held.expires_at <= _now():
            return False
        newer = await self.collection.find_one(
            {"name": self.name, "generation": {"$gt": held.generation}}, {"_id": 1}
        )
        return newer is None

    async def release(self, held: Held) -> None:
        """Give the lease up now, so a standby need not wait for the expiry."""
        await self.collection.update_one(
            {"_id": self._id(held.generation), "holder": held.holder},
            {"$set": {"expires_at": datetime(1970, 1, 1, tzinfo=UTC)}},
        )

    async def _forget_before(self, generation: int) -> None:
        # Keep the previous generation (it shows who held it last); older ones are noise.
        await self.collection.delete_many(
            {"name": self.name, "generation": {"$lt": generation - 1}}
        )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
