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
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from faxbox.shared.store import Carrier
from faxbox.shared.store.claims import GenerationLease, Held

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


class CarrierCooldown:
    """Carriers that asked to be left alone (a 503 with Retry-After), until when.

    In-process: each replica learns it from its own calls, and forgets it when the time
    is up (one entry per carrier at most).
    """

    def __init__(self) -> None:
        self._until: dict[str, datetime] = {}

    def hold(self, carrier_id: str, until: datetime) -> None:
        self._until[carrier_id] = until

    def cooling(self, carrier_id: str, now: datetime) -> bool:
        until = self._until.get(carrier_id)
        if until is None:
            return False
        if until <= now:
            del self._until[carrier_id]
            return False
        return True


@dataclass(frozen=True, slots=True)
class Slot:
    carrier: Carrier
    key: str
    holder: str


class MongoCarrierSlots:
    """Channels as generation leases (``faxbox.shared.store.claims``), one per slot.

    A free or expired channel is taken by inserting the slot's next generation, which only
    one replica can do: FerretDB v1 does not make a conditional update exclusive, and two
    calls on a one-channel carrier were seen when slots were taken that way.
    """

    def __init__(self, collection: AsyncCollection[Doc]) -> None:
        self.collection = collection
        # The slots this process's calls hold, by slot key: under load most busy channels
        # are our own, and acquire skips them without asking the database.
        self._held: dict[str, tuple[GenerationLease, Held]] = {}

    async def acquire(
        self, carriers: Sequence[Carrier], holder: str, now: datetime, lease_s: float
    ) -> Slot | None:
        for carrier in carriers:
            # Start at a random slot so replicas do not all fight over slot 0.
            offset = random.randrange(carrier.channel_cap)
            for i in range(carrier.channel_cap):
                key = f"{carrier.id}:{(offset + i) % carrier.channel_cap}"
                if key in self._held:
                    continue
                lease = GenerationLease(self.collection, key, timedelta(seconds=lease_s))
                held = await lease.acquire(holder)
                if held is not None:
                    self._held[key] = (lease, held)
                    return Slot(carrier, key, holder)
        return None

    def _ours(self, slot: Slot) -> tuple[GenerationLease, Held] | None:
        entry = self._held.get(slot.key)
        return entry if entry is not None and entry[1].holder == slot.holder else None

    async def renew(self, slot: Slot, until: datetime) -> bool:
        entry = self._ours(slot)
        if entry is None:
            return False
        lease, held = entry
        renewed = await lease.renew(held)
        if renewed is None:
            # Lost: another replica may hold it now; ask the database from now on.
            self._held.pop(slot.key, None)
            return False
        self._held[slot.key] = (lease, renewed)
        return True

    async def release(self, slot: Slot) -> None:
        entry = self._ours(slot)
        if entry is not None:
            del self._held[slot.key]
            lease, held = entry
            await lease.release(held)
