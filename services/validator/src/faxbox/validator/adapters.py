"""The validator's ports on MongoDB (FerretDB v1 locally), through ``faxbox.shared.store``.

Collections owned here (no indexes beyond ``_id`` needed):

- ``validator_decisions`` (and ``validator_outbox``): the outbox's, one decision per
  mail (its fax id) with every message decided, so a redelivered ``MailReceived``
  republishes the same messages instead of deciding again (``faxbox.shared.outbox``);
- ``validator_claims``: one document per claimed key (a number of a mail, a rejection of
  a mail), holding the fax id that claimed it (a unique ``_id`` insert: exclusive on
  FerretDB v1 too);
- ``daily_pages``: one counter per user or account and UTC day
  (``_id`` = ``user:<id>:YYYYMMDD``), holding the pages and the fax ids counted;
  ``daily_pages_locks``: the short-lived lock under which a counter changes (see
  :class:`MongoPageCounters` for why not a conditional update).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from faxbox.shared.store import Account, Faxbox, NotFound, Store, User
from faxbox.shared.store.decisions import decisions_collection
from faxbox.validator.authz import Candidate, permission_match

DECISIONS = decisions_collection("validator")
CLAIMS = "validator_claims"
Doc = dict[str, Any]
DAILY_PAGES = "daily_pages"
DAILY_PAGES_LOCKS = "daily_pages_locks"


class MongoDirectory:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def account_by_realm(self, realm: str) -> Account | None:
        try:
            return await self._store.get_account_by_realm(realm)
        except (NotFound, ValueError):
            return None

    async def holds_number(self, account_id: str, number: str) -> bool:
        held = await self._store.find_account_number(number)
        return held is not None and held.account_id == account_id

    async def account(self, account_id: str) -> Account | None:
        try:
            return await self._store.get_account(account_id)
        except NotFound:
            return None

    async def faxbox(self, faxbox_id: str) -> Faxbox | None:
        try:
            return await self._store.get_faxbox(faxbox_id)
        except NotFound:
            return None

    async def user(self, user_id: str) -> User | None:
        try:
            return await self._store.get_user(user_id)
        except NotFound:
            return None

    async def sender_candidates(self, account_id: str, sender: str) -> list[Candidate]:
        """Faxboxes the sender owns, is the alternate of, or is permitted on.

        The owner is found through the unique ``email_lower`` index; alternates and
        permission lists are read per account (no index: FerretDB has no collation,
        and accounts hold few faxboxes with permission lists).
        """
        store = self._store
        owners: dict[str, User] = {}
        user = await store.find_user_by_email(sender)
        if user is not None and user.account_id == account_id:
            owners[user.id] = user
        async for doc in store.users.find(
            {"account_id": account_id, "alternate_email": {"$ne": None}}
        ):
            other = User.from_doc(doc)
            if other.alternate_email is not None and other.alternate_email.lower() == sender:
                owners[other.id] = other
        boxes: dict[str, Faxbox] = {}
        for owner_id in owners:
            for faxbox in await store.list_faxboxes(owner_user_id=owner_id):
                if faxbox.account_id == account_id:
                    boxes[faxbox.id] = faxbox
        async for doc in store.faxboxes.find(
            {"account_id": account_id, "permission_list": {"$ne": []}}
        ):
            faxbox = Faxbox.from_doc(doc)
            if any(permission_match(entry, sender) for entry in faxbox.permission_list):
                boxes[faxbox.id] = faxbox
        candidates: list[Candidate] = []
        for faxbox in boxes.values():
            owner = owners.get(faxbox.owner_user_id)
            if owner is None:
                try:
                    owner = await store.get_user(faxbox.owner_user_id)
                except NotFound:
                    continue
            candidates.append(Candidate(faxbox, owner))
        return candidates


class CounterBusy(RuntimeError):
    """Another process held the day's counter for too long; the delivery is retried."""


class MongoPageCounters:
    """Daily page counters, changed under a per-counter lock document.

    A conditional ``find_one_and_update`` would be the natural tool, but FerretDB v1.24
    (SQLite backend) does not isolate concurrent updates of one document: measured here,
    12 concurrent conditional ``$inc`` against a limit of 5 all reported success and
    updates were lost. Inserting a document with a given ``_id`` is atomic there (the
    primary key decides), so the counter is changed only by the holder of a lock
    document; a holder that died leaves a lock that expires after ``lock_ttl_s``.
    """

    def __init__(self, store: Store, *, lock_ttl_s: float = 10.0, wait_s: float = 15.0) -> None:
        self._collection = store.db[DAILY_PAGES]
        self._locks = store.db[DAILY_PAGES_LOCKS]
        self._lock_ttl_s = lock_ttl_s
        self._wait_s = wait_s

    @contextlib.asynccontextmanager
    async def _locked(self, key: str) -> AsyncIterator[None]:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self._wait_s
        delay = 0.005
        while True:
            now = datetime.now(UTC)
            try:
                await self._locks.insert_one(
                    {
                        "_id": key,
                        "token": token,
                        "expires_at": now + timedelta(seconds=self._lock_ttl_s),
                    }
                )
                break
            except DuplicateKeyError:
                holder = await self._locks.find_one({"_id": key})
                if holder is not None and holder["expires_at"] < now:
                    await self._locks.delete_one({"_id": key, "token": holder["token"]})
                    continue
            if time.monotonic() > deadline:
                raise CounterBusy(f"the page counter {key} stayed locked for {self._wait_s:g}s")
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.2)
        try:
            yield
        finally:
            await self._locks.delete_one({"_id": key, "token": token})

    async def used(self, key: str) -> int:
        doc = await self._collection.find_one({"_id": key}, {"pages": 1})
        return int(doc["pages"]) if doc else 0

    async def reserve(self, key: str, fax_id: str, pages: int, limit: int) -> bool:
        async with self._locked(key):
            doc = await self._collection.find_one({"_id": key})
            if doc is not None and fax_id in doc.get("fax_ids", []):
                return True  # this fax was counted before a redelivery
            used = int(doc["pages"]) if doc else 0
            if used + pages > limit:
                return False
            if doc is None:
                await self._collection.insert_one(
                    {
                        "_id": key,
                        "pages": pages,
                        "fax_ids": [fax_id],
                        "created_at": datetime.now(UTC),
                    }
                )
            else:
                await self._collection.update_one(
                    {"_id": key}, {"$inc": {"pages": pages}, "$push": {"fax_ids": fax_id}}
                )
            return True

    async def release(self, key: str, fax_id: str, pages: int) -> None:
        async with self._locked(key):
            doc = await self._collection.find_one({"_id": key}, {"fax_ids": 1})
            if doc is None or fax_id not in doc.get("fax_ids", []):
                return
            await self._collection.update_one(
                {"_id": key}, {"$inc": {"pages": -pages}, "$pull": {"fax_ids": fax_id}}
            )


class MongoClaims:
    def __init__(self, store: Store) -> None:
        self._collection = store.db[CLAIMS]

    async def claim(self, key: str, fax_id: str) -> bool:
        try:
            await self._collection.insert_one(
                {"_id": key, "fax_id": fax_id, "claimed_at": datetime.now(UTC)}
            )
        except DuplicateKeyError:
            held = await self._collection.find_one({"_id": key}, {"fax_id": 1})
            # Gone in between (its holder released it): claim it now.
            return await self.claim(key, fax_id) if held is None else held["fax_id"] == fax_id
        return True

    async def release(self, key: str, fax_id: str) -> None:
        # Only the holder releases its own claim: no race on the condition.
        await self._collection.delete_one({"_id": key, "fax_id": fax_id})
