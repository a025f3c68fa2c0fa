"""The notification ledger: at most one mail per fax and kind.

One document per ``<fax_id>:<kind>``: ``claimed`` (with an owner and a lease) while a
worker sends, then ``sent``. The Message-ID of the mail is chosen and stored when the
claim is first made, before anything is sent, so every retry of the same notification
carries the same Message-ID.

Trade-off, on purpose: if a worker dies after the SMTP server accepted the mail and
before the ledger says ``sent``, the claim's lease runs out, a redelivery takes it over
and sends again, once, with the same Message-ID (mail clients and many servers
collapse the two). The alternative, marking ``sent`` before sending, could lose the
mail for good; a rare duplicate is the better failure. The takeover is logged.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from faxbox.notifier.ports import AlreadySent, Claim, ClaimBusy

COLLECTION = "notification_ledger"
BUSY_RETRY_S = 5


class MongoLedger:
    def __init__(self, collection: AsyncCollection[dict[str, Any]], lease_s: float = 120.0):
        self.collection = collection
        self.lease = timedelta(seconds=lease_s)

    async def claim(self, key: str, new_message_id: str) -> Claim | AlreadySent:
        now = datetime.now(UTC)
        owner = secrets.token_hex(8)
        try:
            await self.collection.insert_one(
                {
                    "_id": key,
                    "state": "claimed",
                    "smtp_message_id": new_message_id,
                    "owner": owner,
                    "lease_until": now + self.lease,
                    "claimed_at": now,
                    "attempts": 1,
                }
            )
            return Claim(key, owner, new_message_id, maybe_sent_before=False)
        except DuplicateKeyError:
            pass
        doc = await self.collection.find_one({"_id": key})
        if doc is None:  # removed in between (by hand): treat as busy, the retry redoes it
            raise ClaimBusy(key, 1)
        if doc["state"] == "sent":
            return AlreadySent(
                key, doc["smtp_message_id"], tuple(doc.get("recipients", ())), doc["sent_at"]
            )
        lease_until: datetime = doc["lease_until"]
        if doc["state"] == "claimed" and lease_until > now:
            # Usually a duplicate of a mail being sent right now: look again soon, when
            # the ledger most likely says "sent", rather than after the whole lease.
            remaining = int((lease_until - now).total_seconds()) + 1
            raise ClaimBusy(key, max(1, min(remaining, BUSY_RETRY_S)))
        # Expired or released: take it over, but only if nobody else did first.
        taken = await self.collection.find_one_and_update(
            {"_id": key, "owner": doc["owner"], "state": doc["state"]},
            {
                "$set": {"state": "claimed", "owner": owner, "lease_until": now + self.lease},
                "$inc": {"attempts": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        if taken is None:
            raise ClaimBusy(key, 1)
        return Claim(
            key,
            owner,
            doc["smtp_message_id"],
            # Released claims were not sent (the server said no); expired ones may have been.
            maybe_sent_before=doc["state"] == "claimed",
        )

    async def release(self, claim: Claim, reason: str) -> None:
        await self.collection.update_one(
            {"_id": claim.key, "owner": claim.owner, "state": "claimed"},
            {"$set": {"state": "released", "last_error": reason[:1000]}},
        )

    async def mark_sent(self, claim: Claim, recipients: tuple[str, ...], sent_at: datetime) -> None:
        await self.collection.update_one(
            {"_id": claim.key},
            {"$set": {"state": "sent", "sent_at": sent_at, "recipients": list(recipients)}},
        )
