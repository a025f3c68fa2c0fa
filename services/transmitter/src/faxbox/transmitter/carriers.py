"""Which carrier takes a call, and the channel cap every transmitter replica shares.

Eligibility: the carrier is flagged ``fax`` (the store query), has a SIP address and
at least one channel, and every one of its ``require_flags`` is among the flags the
call carries (a call without flags only goes to carriers without require-flags).
Order: priority (lower first), then name — the store's order.

The channel cap is a set of slot documents ``<carrier_id>:<n>`` (n < channel_cap) in
``carrier_slots``, each held by one call with a lease that the call renews. A counter
would leak a channel every time a worker dies mid-call; an expired slot lease is
simply free again.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from faxbox.shared.store import Carrier

Doc = dict[str, Any]

COLLECTION = "carrier_slots"
FAX_FLAG = "fax"


def eligible_carriers(carriers: Iterable[Carrier], call_flags: Iterable[str]) -> list[Carrier]:
    """The carriers that may take a call carrying ``call_flags``, in the order to try."""
    flags = set(call_flags)
    chosen = [
        c
        for c in carriers
        if FAX_FLAG in c.flags
        and c.channel_cap > 0
        and (c.sip_host or c.sip_uri)
        and set(c.require_flags) <= flags
    ]
    return sorted(chosen, key=lambda c: (c.priority, c.name))


@dataclass(frozen=True, slots=True)
class Slot:
    carrier: Carrier
    key: str
    holder: str


class CarrierSlots(Protocol):
    async def acquire(
        self, carriers: Sequence[Carrier], holder: str, now: datetime, lease_s: float
    ) -> Slot | None:
        """A free channel on the first carrier (in order) that has one; None if all busy."""
        ...

    async def renew(self, slot: Slot, until: datetime) -> bool: ...

    async def release(self, slot: Slot) -> None: ...


class MongoCarrierSlots:
    def __init__(self, collection: AsyncCollection[Doc]) -> None:
        self.collection = collection

    async def acquire(
        self, carriers: Sequence[Carrier], holder: str, now: datetime, lease_s: float
    ) -> Slot | None:
        until = now + timedelta(seconds=lease_s)
        for carrier in carriers:
            # Start at a random slot so replicas do not all fight over slot 0.
            offset = random.randrange(carrier.channel_cap)
            for i in range(carrier.channel_cap):
                key = f"{carrier.id}:{(offset + i) % carrier.channel_cap}"
                if await self._take(key, holder, now, until):
                    return Slot(carrier, key, holder)
        return None

    async def _take(self, key: str, holder: str, now: datetime, until: datetime) -> bool:
        try:
            await self.collection.insert_one({"_id": key, "holder": holder, "lease_until": until})
            return True
        except DuplicateKeyError:
            pass
        doc = await self.collection.find_one_and_update(
            {"_id": key, "$or": [{"holder": None}, {"lease_until": {"$lt": now}}]},
            {"$set": {"holder": holder, "lease_until": until}},
        )
        return doc is not None

    async def renew(self, slot: Slot, until: datetime) -> bool:
        result = await self.collection.update_one(
            {"_id": slot.key, "holder": slot.holder}, {"$set": {"lease_until": until}}
        )
        return result.matched_count == 1

    async def release(self, slot: Slot) -> None:
        await self.collection.update_one(
            {"_id": slot.key, "holder": slot.holder},
            {"$set": {"holder": None, "lease_until": None}},
        )
