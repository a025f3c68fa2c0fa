"""Who may send a notification mail: a generation lease per ``<fax_id>:<kind>``.

The first claim of a mail chooses its Message-ID and the lease carries it, so every
later claim (a retry after a deferral, a takeover after a worker died) sends the mail
with the same one. Taking over is inserting the lease's next generation, which only one
worker can do (``faxbox.shared.store.claims``); a takeover of a lease that expired rather
than being released is flagged, since that worker may have handed the mail over just
before it stopped.

Trade-off, on purpose: that worker's mail may then go out twice, with the same
Message-ID (mail clients and many servers collapse the two). Recording "sent" before
sending could lose the mail for good; a rare duplicate is the better failure. Once the
mail is sent, the notifier's outbox records it under the same key, and nobody claims
it again.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pymongo.asynchronous.collection import AsyncCollection

from faxbox.notifier.ports import Claim, ClaimBusy
from faxbox.shared.store.claims import GenerationLease, Held

COLLECTION: Final = "notifier_claims"
# A duplicate of a mail being sent right now most likely finds it sent in a few seconds.
BUSY_RETRY_S: Final = 5


class MongoSendClaims:
    def __init__(self, collection: AsyncCollection[dict[str, Any]], lease_s: float = 120.0):
        self.collection = collection
        self.lease = timedelta(seconds=lease_s)

    def _lease(self, key: str) -> GenerationLease:
        return GenerationLease(self.collection, key, self.lease, headless_chains=False)

    async def claim(self, key: str, new_message_id: str) -> Claim:
        owner = secrets.token_hex(8)
        lease = self._lease(key)
        held = await lease.acquire(owner, carry={"smtp_message_id": new_message_id})
        if held is None:
            current = await lease.current()
            remaining = BUSY_RETRY_S
            if current is not None:
                until: datetime = current["expires_at"]
                until = until if until.tzinfo else until.replace(tzinfo=UTC)
                remaining = int((until - datetime.now(UTC)).total_seconds()) + 1
            raise ClaimBusy(key, max(1, min(remaining, BUSY_RETRY_S)))
        return Claim(
            key,
            owner,
            str(held.carried["smtp_message_id"]),
            maybe_sent_before=held.after_expiry,
            generation=held.generation,
        )

    async def release(self, claim: Claim, reason: str) -> None:
        # Only our own generation is expired: a successor's, if any, stays as it is.
        held = Held(claim.key, claim.generation, claim.owner, datetime.now(UTC) + self.lease)
        await self._lease(claim.key).release(held)
