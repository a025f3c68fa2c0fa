"""Sign-in brute-force protection, shared by every portal replica through the database.

Each password check first inserts one document (e-mail address, client address, the
pair of both, time) into ``portal_signin_attempts``, then counts the documents of the
same pair, of the same client address and of the same e-mail address in the window,
its own included. Over a limit, the
attempt is refused before the password is looked at (its document is removed again, so
refused attempts do not prolong the block) and the caller learns when the oldest
counted failure leaves the window. A wrong password leaves the document in place as a
failure; a right one removes it and the earlier failures of that account from that address.

Insert-then-count needs no conditional update, which FerretDB v1 does not make atomic
(see ``faxbox.shared.store.claims``): concurrent attempts all see each other's inserts,
so racing requests can only be refused too often, never let through past the limit.
There are no TTL indexes on FerretDB v1, so a failure recorded also deletes the
documents that have left the window.

The tight limit is per account and address (5): someone guessing from one address
cannot lock the real user, signing in from elsewhere, out. One address gets 20 tries
over all accounts (an office behind one NAT shares it), and one account 100 from all
addresses together, a backstop against guessing spread over many addresses (which can
still lock that account for the window: the price of stopping it). The client address
is the peer's, or a trusted proxy's X-Forwarded-For (``faxbox.portal.clientaddr``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from faxbox.shared.store import new_id
from faxbox.shared.store.models import utc_now

Doc = dict[str, Any]

COLLECTION = "portal_signin_attempts"


@dataclass(frozen=True, slots=True)
class SignInLimits:
    per_email_and_address: int = 5
    # Higher: an office behind one NAT address shares it.
    per_address: int = 20
    # Every address together: a backstop against guessing from many.
    per_email: int = 100
    window_s: int = 15 * 60


class TooManyFailures(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed sign-ins; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s

    @property
    def message(self) -> str:
        minutes = max(1, math.ceil(self.retry_after_s / 60))
        return (
            "Too many failed sign-ins for this account or from your network. "
            f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    id: str
    email: str
    pair: str


def email_key(email: str) -> str:
    return email.strip().lower()


class SignInThrottle:
    def __init__(
        self,
        db: AsyncDatabase[Doc],
        limits: SignInLimits | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.collection: AsyncCollection[Doc] = db[COLLECTION]
        self.limits = limits or SignInLimits()
        self.clock = clock

    async def ensure_indexes(self) -> None:
        # One index per command: FerretDB v1 crashes on several existing ones at once.
        for index in (
            IndexModel([("email", ASCENDING), ("at", ASCENDING)], name="email_at"),
            IndexModel([("address", ASCENDING), ("at", ASCENDING)], name="address_at"),
            IndexModel([("pair", ASCENDING), ("at", ASCENDING)], name="pair_at"),
        ):
            await self.collection.create_indexes([index])

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.limits.window_s)

    async def begin(self, email: str, address: str) -> Attempt:
        """Record an attempt about to check a password; TooManyFailures if over a limit."""
        now = self.clock()
        key = email_key(email)
        pair = f"{key} {address}"
        attempt = Attempt(new_id("sia"), key, pair)
        await self.collection.insert_one(
            {"_id": attempt.id, "email": key, "address": address, "pair": pair, "at": now}
        )
        since = now - self.window
        for field, value, limit in (
            ("pair", pair, self.limits.per_email_and_address),
            ("address", address, self.limits.per_address),
            ("email", attempt.email, self.limits.per_email),
        ):
            counted = await self.collection.count_documents({field: value, "at": {"$gt": since}})
            if counted > limit:
                await self.collection.delete_one({"_id": attempt.id})
                raise TooManyFailures(await self._retry_after(field, value, limit, since, now))
        return attempt

    async def failed(self, attempt: Attempt) -> None:
        """The password was wrong: the attempt stays, as a failure."""
        await self.collection.delete_many({"at": {"$lte": self.clock() - self.window}})

    async def succeeded(self, attempt: Attempt) -> None:
        # Only this address's failures: someone else's guesses at the account still count.
        await self.collection.delete_many({"pair": attempt.pair})

    async def abandon(self, attempt: Attempt) -> None:
        """The check itself failed (not the password): forget the attempt."""
        await self.collection.delete_one({"_id": attempt.id})

    async def _retry_after(
        self, field: str, value: str, limit: int, since: datetime, now: datetime
    ) -> int:
        # Under the limit again once all but limit-1 of the counted failures have left
        # the window: when the (counted - limit + 1)-th oldest does.
        counted = await self.collection.count_documents({field: value, "at": {"$gt": since}})
        skip = max(0, counted - limit)
        cursor = (
            self.collection.find({field: value, "at": {"$gt": since}}, {"at": 1})
            .sort("at", ASCENDING)
            .skip(skip)
            .limit(1)
        )
        docs = await cursor.to_list(1)
        if not docs:
            return 1
        leaves: datetime = docs[0]["at"] + self.window
        return max(1, math.ceil((leaves - now).total_seconds()))
