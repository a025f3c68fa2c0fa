"""The one adapter of the shared ``Documents`` port: GridFS through ``DocumentStore``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from faxbox.shared.contracts import DocumentRef
from faxbox.shared.store.documents import DocumentStore

Doc = dict[str, Any]


class GridFsDocuments:
    def __init__(self, documents: DocumentStore) -> None:
        self._documents = documents

    def _refs(self, account_id: str, month: str) -> AsyncCollection[Doc]:
        # fax id + role -> the document's ref, by _id in the bucket's ref index: a lookup
        # by the files' metadata read every files document of the month on FerretDB v1.
        return self._documents.refs(account_id, month)

    async def get(self, ref: DocumentRef) -> bytes:
        return await self._documents.get(ref)

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
        metadata = metadata or {}
        ref = await self._documents.put(
            account_id, month, data, filename=filename, content_type=content_type, metadata=metadata
        )
        if "fax_id" not in metadata or "role" not in metadata:
            return ref
        key = _document_key(str(metadata["fax_id"]), str(metadata["role"]))
        try:
            await self._refs(account_id, month).insert_one(
                {"_id": key, "ref": ref.model_dump(mode="json")}
            )
        except DuplicateKeyError:
            # Another delivery of the same fax stored it first: theirs is the one.
            await self._documents.delete(ref)
            existing = await self._refs(account_id, month).find_one({"_id": key})
            if existing is None:
                raise
            return DocumentRef.model_validate(existing["ref"])
        return ref

    async def find(self, account_id: str, month: str, fax_id: str, role: str) -> DocumentRef | None:
        doc = await self._refs(account_id, month).find_one({"_id": _document_key(fax_id, role)})
        return None if doc is None else DocumentRef.model_validate(doc["ref"])


def _document_key(fax_id: str, role: str) -> str:
    return f"{fax_id}:{role}"
