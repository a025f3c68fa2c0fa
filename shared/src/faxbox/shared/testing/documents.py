"""Documents by reference in memory, as the account-month GridFS buckets hold them."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from faxbox.shared.contracts import DocumentRef
from faxbox.shared.store import NotFound


class MemoryDocuments:
    def __init__(self) -> None:
        self.files: dict[str, tuple[DocumentRef, bytes, dict[str, Any]]] = {}

    async def put(
        self,
        account_id: str,
        month: str,
        data: bytes,
        *,
        filename: str,
        content_type: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> DocumentRef:
        meta = dict(metadata or {})
        if "fax_id" in meta and "role" in meta:
            # As the store: one document per fax and role; a repeat gets the first.
            earlier = await self.find(account_id, month, str(meta["fax_id"]), str(meta["role"]))
            if earlier is not None:
                return earlier
        ref = DocumentRef(
            account_id=account_id,
            month=month,
            file_id=f"doc{len(self.files) + 1}",
            filename=filename,
            content_type=content_type,
            length=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        self.files[ref.file_id] = (ref, data, meta)
        return ref

    def keep(self, ref: DocumentRef, data: bytes, **metadata: Any) -> DocumentRef:
        """Hold ``data`` under a reference the test made."""
        self.files[ref.file_id] = (ref, data, metadata)
        return ref

    async def get(self, ref: DocumentRef) -> bytes:
        if ref.file_id not in self.files:
            raise NotFound("document", ref.file_id)
        return self.files[ref.file_id][1]

    async def stream(self, ref: DocumentRef) -> AsyncIterator[bytes]:
        yield await self.get(ref)

    async def fetch(self, ref: DocumentRef, path: Path) -> None:
        await asyncio.to_thread(path.write_bytes, await self.get(ref))

    async def find(self, account_id: str, month: str, fax_id: str, role: str) -> DocumentRef | None:
        for ref, _data, meta in self.files.values():
            if (ref.account_id, ref.month) == (account_id, month) and (
                meta.get("fax_id"),
                meta.get("role"),
            ) == (fax_id, role):
                return ref
        return None

    async def delete(self, ref: DocumentRef) -> None:
        self.files.pop(ref.file_id, None)

    def stored_for(self, fax_id: str) -> list[str]:
        """The roles stored for a fax, sorted."""
        return sorted(
            str(m["role"]) for _r, _d, m in self.files.values() if m.get("fax_id") == fax_id
        )
