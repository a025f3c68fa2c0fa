"""The intake ledger: one document per copy of a mail seen in a mailbox, and where it went.

``_id`` is mailbox|UIDVALIDITY|UID (where the copy sits); ``message_key`` is which mail it
is: the intake key, mailbox + envelope recipient (or "all") + normalized Message-ID or
content hash (``faxbox.shared.envelope``). A second copy of a mail taken before carries
the same key and ``duplicate_of`` = the first copy's ``_id``.

The ledger decides nothing: whether a mail was taken, and its ``MailReceived``, are the
mail-poller's outbox decision under the intake key (``faxbox.shared.outbox``). An entry is
written once the decision is recorded, so that taking the same UID again (the publish
or the move failed, the process died) needs no second fetch; ``moved_at`` is set once
the copy left the folder. Every write is by ``_id``.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Final

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from faxbox.shared.contracts import DocumentRef

COLLECTION: Final = "intake_ledger"
# The key was unique while the ledger itself decided which copy was first; the outbox
# decides it now, and a duplicate entry carries the first copy's key.
_RETIRED_INDEX: Final = "message_key_unique"

Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: str
    mailbox: str
    uid_validity: int
    uid: int
    message_key: str
    rfc822_message_id: str | None
    received_at: datetime
    created_at: datetime
    fax_id: str | None = None  # the mail's, also on a duplicate
    message_id: str | None = None  # of this copy's MailReceived; None on a duplicate
    raw: DocumentRef | None = None  # this copy's stored bytes; None on a duplicate
    duplicate_of: str | None = None
    recipient: str | None = None  # the copy's envelope recipient, if it names one
    size: int | None = None  # RFC822.SIZE
    # Set when the mail was over this size cap: only its header block was taken.
    oversize_limit: int | None = None
    moved_at: datetime | None = None

    def to_doc(self) -> Doc:
        fields = asdict(self)
        del fields["id"]
        fields["raw"] = None if self.raw is None else self.raw.model_dump()
        return {"_id": self.id, **fields}

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
            received_at=doc["received_at"],
            created_at=doc["created_at"],
            fax_id=doc.get("fax_id"),
            message_id=doc.get("message_id"),
            raw=None if raw is None else DocumentRef.model_validate(raw),
            duplicate_of=doc.get("duplicate_of"),
            recipient=doc.get("recipient"),
            size=doc.get("size"),
            oversize_limit=doc.get("oversize_limit"),
            moved_at=doc.get("moved_at"),
        )


class MongoLedger:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection: AsyncCollection[Doc] = db[COLLECTION]

    async def ensure_indexes(self) -> None:
        with contextlib.suppress(OperationFailure):  # never created, or dropped before
            await self.collection.drop_index(_RETIRED_INDEX)

    async def get(self, entry_id: str) -> LedgerEntry | None:
        doc = await self.collection.find_one({"_id": entry_id})
        return None if doc is None else LedgerEntry.from_doc(doc)

    async def insert(self, entry: LedgerEntry) -> LedgerEntry:
        """Write the entry; if another run wrote this copy's entry first, that one."""
        try:
            await self.collection.insert_one(entry.to_doc())
        except DuplicateKeyError:
            existing = await self.get(entry.id)
            if existing is None:  # removed by hand in between
                raise
            return existing
        return entry

    async def mark_moved(self, entry_id: str, at: datetime) -> None:
        await self.collection.update_one({"_id": entry_id}, {"$set": {"moved_at": at}})
