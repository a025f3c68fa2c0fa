"""One active poller per mailbox: a lease document in MongoDB.

``intake_leases`` holds one document per mailbox: ``holder`` and ``expires_at``. Taking
or renewing is one ``find_one_and_update`` that matches only if this replica already
holds the lease or it has expired; when another replica holds a live lease the filter
misses, the upsert collides with the existing ``_id`` and the answer is "not yours".

The holder trusts its lease only until ``ttl_s`` after its last successful renewal,
counted on its own monotonic clock from before the renew was sent, so it stops working
before any standby can take over even if its renewals fail silently. Lease expiry is
compared on the replicas' wall clocks: keep them NTP-synchronized (skew adds to the
takeover time, or, beyond ``ttl_s``, lets two pollers overlap; the ledger still keeps
that from publishing twice).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

log = logging.getLogger(__name__)

COLLECTION: Final = "intake_leases"

Doc = dict[str, Any]


class MongoLease:
    def __init__(
        self,
        db: AsyncDatabase[Doc],
        mailbox: str,
        holder: str,
        ttl_s: float,
        *,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.collection: AsyncCollection[Doc] = db[COLLECTION]
        self.mailbox = mailbox
        self.holder = holder
        self.ttl_s = ttl_s
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._valid_until = 0.0

    @property
    def held(self) -> bool:
        """True while the last successful take/renew is younger than the TTL."""
        return self._monotonic() < self._valid_until

    async def try_acquire(self) -> bool:
        """Take or renew the lease; False if another replica holds a live one."""
        sent_at = self._monotonic()
        now = self._wall_clock()
        try:
            doc = await self.collection.find_one_and_update(
                {
                    "_id": self.mailbox,
                    "$or": [{"holder": self.holder}, {"expires_at": {"$lt": now}}],
                },
                {
                    "$set": {
                        "holder": self.holder,
                        "expires_at": now + timedelta(seconds=self.ttl_s),
                        "renewed_at": now,
                    }
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            doc = None
        if doc is None or doc.get("holder") != self.holder:
            self._valid_until = 0.0
            return False
        self._valid_until = sent_at + self.ttl_s
        return True

    async def release(self) -> None:
        """Give the lease up (graceful stop) so a standby takes over at once."""
        self._valid_until = 0.0
        await self.collection.update_one(
            {"_id": self.mailbox, "holder": self.holder},
            {"$set": {"expires_at": datetime(1970, 1, 1, tzinfo=UTC), "holder": None}},
        )

    async def current_holder(self) -> str | None:
        doc = await self.collection.find_one({"_id": self.mailbox})
        if doc is None or doc.get("expires_at") is None:
            return None
        if doc["expires_at"] < self._wall_clock():
            return None
        holder = doc.get("holder")
        return holder if isinstance(holder, str) else None
