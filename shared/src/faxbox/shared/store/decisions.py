"""Decisions and the keys still owed to the broker, in MongoDB (FerretDB v1 locally).

Two collections per outbox (see ``faxbox.shared.outbox`` for the steps):

- ``<name>_decisions``: one document per idempotency key (``_id``), with the messages
  decided, kept for good: every question asked of it is "this key?", which FerretDB v1
  answers through its ``_id`` index. Its insert is the exclusive step.
- ``<name>_outbox``: one small document per key whose messages are not all confirmed
  yet, deleted once they are. The sweeper reads the whole of it (any other filter than
  ``_id`` is a scan on FerretDB v1), so it stays as short as the publishes in flight.

A key is entered in the outbox *before* its decision is inserted, so a decision that
exists and is not confirmed is always in the outbox, whatever instant a process dies
at. An outbox entry without a decision (a process died between the two inserts) is the
one thing that may be left behind: the sweeper drops it once it is ``abandoned_after``
old; the delivery that made it comes back and records it again.

Each entry carries a token of the handling that made it, and the decision the token of
the entry it was owed under. A handling that loses the decision's insert and finds that
the only entry is its own (the decision's entry is gone, so it was confirmed) takes its
entry back: a late duplicate does not publish a confirmed decision again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from faxbox.shared.contracts import Message, contract_by_name
from faxbox.shared.outbox import Decided, Recorded

log = logging.getLogger(__name__)

Doc = dict[str, Any]


def decisions_collection(name: str) -> str:
    return f"{name.replace('-', '_')}_decisions"


def outbox_collection(name: str) -> str:
    return f"{name.replace('-', '_')}_outbox"


def _messages(doc: Doc) -> tuple[Message, ...]:
    # The validator's decisions from before this store: "message" for "body", and before
    # one mail could become several faxes, a single message at the top level.
    items = doc.get("messages") or [doc]
    return tuple(
        contract_by_name(str(item["type"])).model_validate_json(
            str(item.get("body") or item["message"])
        )
        for item in items
    )


def _unconfirmed_before(doc: Doc) -> bool:
    # The validator's own ledger, before this store, marked what the broker confirmed.
    before = not doc.get("messages") or "body" not in doc["messages"][0]
    return before and doc.get("published_at") is None


class MongoDecisionStore:
    """The ``DecisionStore`` of outbox ``name`` (a service's name)."""

    def __init__(
        self,
        db: AsyncDatabase[Doc],
        name: str,
        *,
        abandoned_after: timedelta = timedelta(hours=1),
    ) -> None:
        self.decisions: AsyncCollection[Doc] = db[decisions_collection(name)]
        self.outbox: AsyncCollection[Doc] = db[outbox_collection(name)]
        self.abandoned_after = abandoned_after

    async def ensure_indexes(self) -> None:
        # For MongoDB's sake; FerretDB v1 reads the (short) outbox whole anyway.
        await self.outbox.create_index([("owed_since", ASCENDING)], name="owed_since")

    async def get(self, key: str) -> Recorded | None:
        doc = await self.decisions.find_one({"_id": key})
        if doc is None:
            return None
        owed = await self.outbox.find_one({"_id": key}, {"_id": 1}) is not None
        return Recorded(key, _messages(doc), owed=owed or _unconfirmed_before(doc))

    async def record(self, decided: Decided) -> Recorded:
        now = datetime.now(UTC)
        token = uuid.uuid4().hex
        owed_by = await self._owe(decided.key, now, token)
        try:
            await self.decisions.insert_one(
                {
                    "_id": decided.key,
                    "messages": [
                        {"type": type(m).__name__, "body": m.model_dump_json()}
                        for m in decided.messages
                    ],
                    "decided_at": now,
                    "owed_by": owed_by,
                }
            )
        except DuplicateKeyError:
            # Another handling of the same work decided first: its decision stands.
            doc = await self.decisions.find_one({"_id": decided.key})
            if doc is None:  # removed by hand in between
                raise
            standing = Recorded(decided.key, _messages(doc), decided.retry)
            if owed_by == token and doc.get("owed_by") != token:
                # Ours is the only entry, so the one it was owed under is gone: it was
                # confirmed. (Had it relied on ours, it would carry our token.)
                await self.outbox.delete_one({"_id": decided.key, "owed_by": token})
                return replace(standing, owed=_unconfirmed_before(doc))
            return standing
        return Recorded(decided.key, decided.messages, decided.retry)

    async def _owe(self, key: str, now: datetime, token: str) -> str | None:
        """Enter ``key`` as owed; the token of its entry (ours, or the one already there)."""
        try:
            await self.outbox.insert_one({"_id": key, "owed_since": now, "owed_by": token})
        except DuplicateKeyError:
            entry = await self.outbox.find_one({"_id": key}, {"owed_by": 1})
            return None if entry is None else entry.get("owed_by")
        return token

    async def forget(self, key: str) -> None:
        await self.outbox.delete_one({"_id": key})

    async def owed(self, older_than: datetime) -> list[Recorded]:
        abandoned = datetime.now(UTC) - self.abandoned_after
        found: list[Recorded] = []
        async for entry in self.outbox.find({"owed_since": {"$lt": older_than}}):
            key = str(entry["_id"])
            doc = await self.decisions.find_one({"_id": key})
            if doc is not None:
                found.append(Recorded(key, _messages(doc)))
            elif _aware(entry["owed_since"]) < abandoned:
                log.warning("dropping owed key %s: its decision was never recorded", key)
                await self.outbox.delete_one({"_id": key})
        return found


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
