"""A replica's hold on a ``GenerationLease``: take or renew it, know whether it still holds.

One replica at a time does the work a lease guards (a mailbox's polling, the history's
writing on FerretDB); the others stand by and take over once the holder's lease expired,
which only one of them can (the next generation is a unique insert). The generation is
the holder's fencing token: once a newer one exists its renewals fail and it stops.

The holder trusts its lease only until ``ttl_s`` after its last successful renewal,
counted on its own monotonic clock from before the renew was sent, so it stops working
before any standby can take over even if its renewals fail silently. Expiry is compared
on the replicas' wall clocks: keep them NTP-synchronized (skew adds to the takeover
time, or, beyond ``ttl_s``, lets two holders overlap).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from faxbox.shared.store.claims import GenerationLease, Held

Doc = dict[str, Any]


class HeldLease:
    def __init__(
        self,
        collection: AsyncCollection[Doc],
        name: str,
        holder: str,
        ttl_s: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease = GenerationLease(
            collection, name, timedelta(seconds=ttl_s), headless_chains=False
        )
        self.holder = holder
        self.ttl_s = ttl_s
        self._monotonic = monotonic
        self._held: Held | None = None
        self._valid_until = 0.0

    @property
    def held(self) -> bool:
        """True while the last successful take/renew is younger than the TTL."""
        return self._monotonic() < self._valid_until

    async def try_acquire(self) -> bool:
        """Take or renew the lease; False if another replica holds a live one."""
        sent_at = self._monotonic()
        held = None if self._held is None else await self.lease.renew(self._held)
        if held is None:
            held = await self.lease.acquire(self.holder)
        self._held = held
        if held is None:
            self._valid_until = 0.0
            return False
        self._valid_until = sent_at + self.ttl_s
        return True

    async def release(self) -> None:
        """Give the lease up (graceful stop) so a standby takes over at once."""
        self._valid_until = 0.0
        held, self._held = self._held, None
        if held is not None:
            await self.lease.release(held)

    async def current_holder(self) -> str | None:
        doc = await self.lease.current()
        if doc is None:
            return None
        expires_at: datetime = doc["expires_at"]
        if expires_at.replace(tzinfo=expires_at.tzinfo or UTC) <= datetime.now(UTC):
            return None
        holder = doc.get("holder")
        return holder if isinstance(holder, str) else None
