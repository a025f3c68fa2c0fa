"""The transmitter's documents in GridFS: the document to send, fetched to a file, and
the TIFF a call sent, kept once per attempt in the fax's account-month bucket. The other
real ports: ``line.SipFaxLine``, ``carriers.MongoCarrierSlots``, ``jobs.MongoJobLedger``
and the shared store (carriers, cancellations)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymongo.errors import DuplicateKeyError

from faxbox.shared.contracts import DocumentRef, OutboundFaxRequested
from faxbox.shared.store import Store


class GridFsDocuments:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def fetch(self, ref: DocumentRef, path: Path) -> None:
        with path.open("wb") as f:
            async for chunk in self.store.documents.stream(ref):
                f.write(chunk)

    async def put_transmitted(
        self, message: OutboundFaxRequested, attempt: int, path: Path
    ) -> DocumentRef:
        refs = self.store.documents.refs(message.account_id, message.month)
        key = f"{message.fax_id}:transmitted#{attempt}"
        known = await refs.find_one({"_id": key})
        if known is not None:
            return DocumentRef.model_validate(known["ref"])
        ref = await self.store.documents.put(
            message.account_id,
            message.month,
            await asyncio.to_thread(path.read_bytes),
            filename=f"{message.fax_id}-sent.tif",
            content_type="image/tiff",
            metadata={"fax_id": message.fax_id, "role": "transmitted", "attempt": attempt},
        )
        try:
            await refs.insert_one({"_id": key, "ref": ref.model_dump(mode="json")})
        except DuplicateKeyError:  # two workers on one attempt: the first one's stands
            await self.store.documents.delete(ref)
            known = await refs.find_one({"_id": key})
            if known is None:
                raise
            return DocumentRef.model_validate(known["ref"])
        return ref
