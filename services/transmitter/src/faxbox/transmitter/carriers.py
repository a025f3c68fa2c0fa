"""Which carrier takes a call, and the channel cap every transmitter replica shares.

Eligibility: the carrier is flagged ``fax`` (the store query), has a SIP address and
at least one channel, and every one of its ``require_flags`` is among the flags the
call carries (a call without flags only goes to carriers without require-flags).
Order: priority (lower first), then name — the store's order.

The channel cap (``adapters.MongoCarrierSlots``) is a set of slot documents
``<carrier_id>:<n>`` (n < channel_cap) in ``carrier_slots``, each held by one call with
a lease that the call renews. A counter would leak a channel every time a worker dies
mid-call; an expired slot lease is simply free again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
    """One channel of ``carrier`` (``key``: ``<carrier_id>:<n>``), held by ``holder``."""

    carrier: Carrier
    key: str
    holder: str
