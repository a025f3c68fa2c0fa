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

Every read and write names documents by ``_id`` alone: FerretDB v1 (SQLite) scans and
decodes the whole collection for any other filter, and carrier channels are leases probed
on every call. Generations are consecutive (a taker inserts exactly latest + 1), so "is
there a newer generation than g" is "does ``<name>#<g+1>`` exist". Where the chain ends
is kept as a hint in a head document ``_id = <name>``, written after each take of a
generation above the first (a lease without a head starts at ``<name>#1``); a stale hint
(a taker that died in between) is corrected by probing forward. Chains written before
heads existed (carrier slots of an older version) may lack both the head and their first
generations: a lease of such a collection is looked up by name once, a scan on FerretDB,
which lease families created since (``headless_chains=False``) never pay.

A lease can carry a value chosen by its first holder that every successor inherits (the
notifier's Message-ID: a mail sent again after a takeover must carry the same one), and
tells a taker whether its predecessor released the lease or let it expire, cut off
mid-work perhaps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

Doc = dict[str, Any]

_GENERATION_DIGITS = 12
_RELEASED: Final = datetime(1970, 1, 1, tzinfo=UTC)


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
    """A lease this process holds: its generation is the fencing token.

    ``carried``: what the lease's first holder set, inherited by every generation.
    ``after_expiry``: the previous holder's generation ran out instead of being released.
    """

    name: str
    generation: int
    holder: str
    expires_at: datetime
    carried: Mapping[str, Any] = field(default_factory=dict)
    after_expiry: bool = False


class GenerationLease:
    """An exclusive, expiring lease on ``name`` for one holder at a time."""

    def __init__(
        self,
        collection: AsyncCollection[Doc],
        name: str,
        ttl: timedelta,
        *,
        headless_chains: bool = True,
    ) -> None:
        if "#" in name:
            raise ValueError("a lease name may not contain '#'")
        self.collection = collection
        self.name = name
        self.ttl = ttl
        self.headless_chains = headless_chains

    def _id(self, generation: int) -> str:
        return f"{self.name}#{generation:0{_GENERATION_DIGITS}d}"

    async def ensure_indexes(self) -> None:
        # For the by-name lookup of a lease without a head (see _latest).
        await self.collection.create_index([("name", 1), ("generation", DESCENDING)])

    async def _latest(self) -> tuple[int, Doc | None]:
        """The last generation taken (0 if none) and its document (None if none)."""
        head = await self.collection.find_one({"_id": self.name})
        generation = int(head["generation"]) if head is not None else 1
        latest = await self.collection.find_one({"_id": self._id(generation)})
        if latest is None:
            generation = 0 if head is None else generation
            if self.headless_chains:
                # Taken only by a version before heads, or the head's generation already
                # forgotten: ask by name, once. A scan on FerretDB, but only until the
                # next take writes the head.
                by_name = await self.collection.find_one(
                    {"name": self.name}, sort=[("generation", DESCENDING)]
                )
                if by_name is not None and int(by_name["generation"]) >= generation:
                    generation, latest = int(by_name["generation"]), by_name
            if latest is None and generation == 0:
                return 0, None  # no head, no first generation: never taken
        if latest is not None and _aware(latest["expires_at"]) > _now():
            # Nobody takes a lease before it expires (a release expires it), so no newer
            # generation can exist yet: the usual answer for a busy channel, in two reads.
            return generation, latest
        while True:
            newer = await self.collection.find_one({"_id": self._id(generation + 1)})
            if newer is None:
                return generation, latest
            generation, latest = generation + 1, newer

    async def current(self) -> Doc | None:
        """The latest generation's document, None if the lease was never taken."""
        return (await self._latest())[1]

    async def acquire(self, holder: str, carry: Mapping[str, Any] | None = None) -> Held | None:
        """Take the lease if it is free or expired, or renew it if ``holder`` has it.

        ``carry`` is kept with the lease if this is its first take; later takers get the
        first one's (``Held.carried``).
        """
        now = _now()
        generation, latest = await self._latest()
        carried: Mapping[str, Any] = dict(carry or {})
        after_expiry = False
        if latest is not None:
            expires_at = _aware(latest["expires_at"])
            carried = latest.get("carried") or carried
            if latest["holder"] == holder and expires_at > now:
                held = Held(self.name, generation, holder, expires_at, carried)
                return await self.renew(held)
            if expires_at > now:
                return None
            after_expiry = expires_at > _RELEASED
        generation += 1
        expires_at = now + self.ttl
        fields: Doc = {
            "name": self.name,
            "generation": generation,
            "holder": holder,
            "acquired_at": now,
            "expires_at": expires_at,
        }
        if carried:
            fields["carried"] = dict(carried)
        if not await claim(self.collection, self._id(generation), **fields):
            return None
        if generation > 1:
            await self._advance_head(generation)
            await self._forget_before(generation)
        return Held(self.name, generation, holder, expires_at, carried, after_expiry)

    async def _advance_head(self, generation: int) -> None:
        # Another taker may create the head at the same moment (duplicate key): it is a
        # hint, and the next reader probes forward from whatever it says.
        with contextlib.suppress(DuplicateKeyError):
            await self.collection.update_one(
                {"_id": self.name}, {"$max": {"generation": generation}}, upsert=True
            )

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
        return replace(held, expires_at=expires_at)

    async def still_held(self, held: Held) -> bool:
        """True while no newer generation exists and ours has not expired."""
        if held.expires_at <= _now():
            return False
        newer = await self.collection.find_one({"_id": self._id(held.generation + 1)}, {"_id": 1})
        return newer is None

    async def release(self, held: Held) -> None:
        """Give the lease up now, so a standby need not wait for the expiry."""
        await self.collection.update_one(
            {"_id": self._id(held.generation), "holder": held.holder},
            {"$set": {"expires_at": _RELEASED}},
        )

    async def _forget_before(self, generation: int) -> None:
        # Keep the previous two generations: the one before shows who held the lease last,
        # and a holder two generations behind must still find its successor (g + 1) to
        # learn it lost. Each take deletes one, so the chain stays three documents long.
        if generation > 3:
            await self.collection.delete_one({"_id": self._id(generation - 3)})


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
