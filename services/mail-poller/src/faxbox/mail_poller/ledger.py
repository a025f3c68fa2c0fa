"""The intake ledger: one document per message seen, the source of exactly-once intake.

``_id`` is mailbox|UIDVALIDITY|UID (where the message sits); ``message_key`` (unique
index) is what the message is: the intake key, mailbox + envelope recipient (or "all")
+ normalized Message-ID or content hash (``faxbox.shared.envelope``). A second copy of
an already-taken mail for the same recipient gets ``message_key = "dup:<_id>"`` (unique,
never null) and state ``duplicate``, pointing at the first one.

States only move forward, each step one conditional single-document update:
``stored → published → moved`` and ``duplicate → moved``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from faxbox.shared.contracts import DocumentRef

COLLECTION: Final = "intake_ledger"
# message key -> ledger entry id, one document per key with the key as ``_id``: FerretDB
# v1 finds documents by index only through ``_id``, so a lookup by the ledger's
# ``message_key`` field read the whole ledger (every mail ever taken) for each new mail.
KEYS_COLLECTION: Final = "intake_message_keys"

Doc = dict[str, Any]


class State(StrEnum):
    stored = "stored"
    published = "published"
    duplicate = "duplicate"
    moved = "moved"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: str
    mailbox: str
    uid_validity: int
    uid: int
    message_key: str
    rfc822_message_id: str | None
    state: State
    received_at: datetime
    created_at: datetime
    # Allocated once, when the entry is created, and reused by every (re)publish.
    fax_id: str | None = None
    message_id: str | None = None
    raw: DocumentRef | None = None
    duplicate_of: str | None = None
    recipient: str | None = None  # the copy's envelope recipient, if it names one
    size: int | None = None  # RFC822.SIZE
    # Set when the mail was over this size cap: only its header block was taken.
    oversize_limit: int | None = None

    def to_doc(self) -> Doc:
        return {
            "_id": self.id,
            "mailbox": self.mailbox,
            "uid_validity": self.uid_validity,
            "uid": self.uid,
            "message_key": self.message_key,
            "rfc822_message_id": self.rfc822_message_id,
            "state": self.state.value,
            "received_at": self.received_at,
            "created_at": self.created_at,
            "fax_id": self.fax_id,
            "message_id": self.message_id,
            "raw": None if self.raw is None else self.raw.model_dump(),
            "duplicate_of": self.duplicate_of,
            "recipient": self.recipient,
            "size": self.size,
            "oversize_limit": self.oversize_limit,
        }

    @classmethod
    def from_doc(cls, doc: Doc) -> LedgerEntry:
        raw = doc.get("raw")
        return cls(
            id=doc["_id"],
            mailbox=doc["mailbox"],
            uid_validity=doc["uid_validity"],
            uid=doc["uid"],
            message_key=doc["message_key"],
            rfc822_message_id=doc.get("rfc822_message_id"),
            state=State(doc["state"]),
            received_at=doc["received_at"],
            created_at=doc["created_at"],
            fax_id=doc.get("fax_id"),
            message_id=doc.get("message_id"),
            raw=None if raw is None else DocumentRef.model_validate(raw),
            duplicate_of=doc.get("duplicate_of"),
            recipient=doc.get("recipient"),
            size=doc.get("size"),
            oversize_limit=doc.get("oversize_limit"),
        )

    def with_state(self, state: State) -> LedgerEntry:
        return replace(self, state=state)


class DuplicateLedgerId(Exception):
    """An entry for this mailbox/UIDVALIDITY/UID exists already."""


class DuplicateMessageKey(Exception):
    """Another entry has this message key: the mail was taken before."""


class MongoLedger:
    """The ledger in MongoDB/FerretDB: single-document atomic writes only."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection: AsyncCollection[Doc] = db[COLLECTION]
        self.keys: AsyncCollection[Doc] = db[KEYS_COLLECTION]

    async def ensure_indexes(self) -> None:
        # One index per createIndexes command: FerretDB v1.24 crashes otherwise on restart.
        await self.collection.create_indexes(
            [IndexModel([("message_key", ASCENDING)], name="message_key_unique", unique=True)]
        )
        await self.collection.create_indexes(
            [IndexModel([("mailbox", ASCENDING), ("state", ASCENDING)], name="mailbox_state")]
        )

    async def get(self, entry_id: str) -> LedgerEntry | None:
        doc = await self.collection.find_one({"_id": entry_id})
        return None if doc is None else LedgerEntry.from_doc(doc)

    async def find_by_message_key(self, key: str) -> LedgerEntry | None:
        held = await self.keys.find_one({"_id": key})
        # A key whose entry is not written yet (its writer died in between) is nobody's
        # until that message is taken again.
        return None if held is None else await self.get(str(held["entry_id"]))

    async def insert(self, entry: LedgerEntry) -> None:
        # The key first: a unique _id insert is the one write FerretDB v1 makes exclusive.
        claimed = True
        try:
            await self.keys.insert_one({"_id": entry.message_key, "entry_id": entry.id})
        except DuplicateKeyError:
            held = await self.keys.find_one({"_id": entry.message_key})
            if held is None or held["entry_id"] != entry.id:
                raise DuplicateMessageKey(entry.message_key) from None
            claimed = False  # ours from an earlier try that died before the entry
        try:
            await self.collection.insert_one(entry.to_doc())
        except DuplicateKeyError:
            # FerretDB's duplicate-key error does not name the index: look at the data.
            existing = await self.collection.find_one({"_id": entry.id}, {"message_key": 1})
            if existing is not None:
                if claimed and existing["message_key"] != entry.message_key:
                    await self.keys.delete_one({"_id": entry.message_key, "entry_id": entry.id})
                raise DuplicateLedgerId(entry.id) from None
            raise DuplicateMessageKey(entry.message_key) from None

    async def advance(
        self, entry_id: str, from_states: tuple[State, ...], to: State, at: datetime
    ) -> LedgerEntry | None:
        """Move the entry to ``to`` if it is in one of ``from_states``; None if it was not."""
        doc = await self.collection.find_one_and_update(
            {"_id": entry_id, "state": {"$in": [s.value for s in from_states]}},
            {"$set": {"state": to.value, f"{to.value}_at": at}},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else LedgerEntry.from_doc(doc)
