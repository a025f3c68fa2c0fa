"""Fax documents in GridFS, one bucket per account and month.

A bucket per account-month (``documents_<account>_<YYYYMM>``) means retention drops two
collections instead of deleting chunks one by one, and one account's volume never
slows another's queries. File ids are strings generated here, so the
:class:`~faxbox.shared.contracts.DocumentRef` returned is plain JSON and travels in bus
messages as is.

The layout is GridFS's (``.files`` and ``.chunks`` with ``files_id``, ``n``, ``data``),
so any GridFS reader can read the documents, but chunks are written and read here by a
chunk ``_id`` derived from the file id (``<file_id>:<n>``): FerretDB v1 uses an index
only for ``_id`` equality, and a driver's GridFS read (``files_id`` and ``n``) decodes
every chunk of the bucket, measured at 15 ms with 10 files and 680 ms with 1000 (30 KB
each). Chunks written by a stock GridFS writer are still found, by the GridFS query.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from bson.binary import Binary
from gridfs.asynchronous import AsyncGridFSBucket
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from faxbox.shared.contracts import DocumentRef
from faxbox.shared.store.errors import DocumentCorrupt, NotFound
from faxbox.shared.store.models import new_id
from faxbox.shared.store.monthly import MonthLike, document_bucket_name, parse_month

Doc = dict[str, Any]

CHUNK_SIZE = 255 * 1024  # GridFS default; well under FerretDB's 16 MiB document limit
_KEY_RE = re.compile(r"^[^.$][^.]*$")


def _check_metadata_keys(metadata: Mapping[str, Any], path: str = "metadata") -> None:
    # FerretDB v1 refuses keys with '.' or a leading '$'; say which key, up front,
    # instead of a server error after the chunks were written.
    for key, value in metadata.items():
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ValueError(f"{path} key {key!r} must not contain '.' or start with '$'")
        if isinstance(value, Mapping):
            _check_metadata_keys(value, f"{path}.{key}")


async def _as_async_chunks(data: bytes | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
        return
    async for chunk in data:
        yield chunk


def chunk_id(file_id: str, n: int) -> str:
    return f"{file_id}:{n}"


async def _pieces(data: bytes | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The data cut into CHUNK_SIZE pieces (the last one shorter), whatever comes in."""
    pending = bytearray()
    async for part in _as_async_chunks(data):
        pending += part
        while len(pending) >= CHUNK_SIZE:
            yield bytes(pending[:CHUNK_SIZE])
            del pending[:CHUNK_SIZE]
    if pending:
        yield bytes(pending)


class DocumentStore:
    """put/get/stream/delete of fax documents in per account-month GridFS buckets."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db

    def bucket(self, account_id: str, month: MonthLike) -> AsyncGridFSBucket:
        """The bucket for GridFS tools; this class itself reads and writes by chunk ``_id``."""
        return AsyncGridFSBucket(
            self.db,
            bucket_name=document_bucket_name(account_id, month),
            chunk_size_bytes=CHUNK_SIZE,
        )

    def _collections(
        self, account_id: str, month: MonthLike
    ) -> tuple[AsyncCollection[Doc], AsyncCollection[Doc]]:
        name = document_bucket_name(account_id, month)
        return self.db[f"{name}.files"], self.db[f"{name}.chunks"]

    def refs(self, account_id: str, month: MonthLike) -> AsyncCollection[Doc]:
        """The bucket's ref index (``<bucket>.refs``): callers' own keys (as ``_id``) of
        documents in the bucket, so they find one by ``_id`` (FerretDB v1 indexes nothing
        else); dropped with the bucket."""
        return self.db[f"{document_bucket_name(account_id, month)}.refs"]

    async def put(
        self,
        account_id: str,
        month: MonthLike,
        data: bytes | AsyncIterable[bytes],
        *,
        filename: str,
        content_type: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> DocumentRef:
        """Store ``data`` (bytes, or an async iterator of byte chunks) and return its ref.

        The sha256 and length are computed while the chunks go out, so an iterator
        source is never buffered whole. The files document is written last: a document
        is there only when all of it is. On any failure the chunks written are removed.
        """
        month = parse_month(month)
        user_metadata = dict(metadata or {})
        _check_metadata_keys(user_metadata)
        file_id = new_id("doc")
        files, chunks = self._collections(account_id, month)
        digest = hashlib.sha256()
        length = 0
        written: list[str] = []
        try:
            async for piece in _pieces(data):
                digest.update(piece)
                length += len(piece)
                n = len(written)
                await chunks.insert_one(
                    {
                        "_id": chunk_id(file_id, n),
                        "files_id": file_id,
                        "n": n,
                        "data": Binary(piece),
                    }
                )
                written.append(chunk_id(file_id, n))
            await files.insert_one(
                {
                    "_id": file_id,
                    "length": length,
                    "chunkSize": CHUNK_SIZE,
                    "uploadDate": datetime.now(UTC),
                    "filename": filename,
                    "metadata": {
                        **user_metadata,
                        "content_type": content_type,
                        "account_id": account_id,
                    },
                    # Kept with the file, so stored bytes can be audited without the ref.
                    "sha256": digest.hexdigest(),
                }
            )
        except BaseException:
            if written:
                await chunks.delete_many({"_id": {"$in": written}})
            raise
        return DocumentRef(
            account_id=account_id,
            month=month,
            file_id=file_id,
            filename=filename,
            content_type=content_type,
            length=length,
            sha256=digest.hexdigest(),
        )

    async def get(self, ref: DocumentRef, *, verify: bool = True) -> bytes:
        """The whole document; checks its sha256 unless ``verify`` is False."""
        data = b"".join([chunk async for chunk in self.stream(ref)])
        if verify:
            actual = hashlib.sha256(data).hexdigest()
            if actual != ref.sha256:
                raise DocumentCorrupt(ref.file_id, ref.sha256, actual)
        return data

    async def stream(self, ref: DocumentRef) -> AsyncIterator[bytes]:
        """The document chunk by chunk (one GridFS chunk, ≤255 KiB, at a time)."""
        files, chunks = self._collections(ref.account_id, ref.month)
        where = f"{ref.account_id}/{ref.month}/{ref.file_id}"
        file = await files.find_one({"_id": ref.file_id})
        if file is None:
            raise NotFound("document", where)
        count = math.ceil(int(file["length"]) / int(file["chunkSize"]))
        for n in range(count):
            chunk = await chunks.find_one({"_id": chunk_id(ref.file_id, n)})
            if chunk is None:  # written by a stock GridFS writer
                chunk = await chunks.find_one({"files_id": ref.file_id, "n": n})
            if chunk is None:
                raise DocumentCorrupt(
                    ref.file_id, ref.sha256, "", reason=f"chunk {n} of {count} is missing"
                )
            yield bytes(chunk["data"])

    async def delete(self, ref: DocumentRef) -> None:
        files, chunks = self._collections(ref.account_id, ref.month)
        file = await files.find_one_and_delete({"_id": ref.file_id})
        if file is None:
            raise NotFound("document", f"{ref.account_id}/{ref.month}/{ref.file_id}")
        count = math.ceil(int(file["length"]) / int(file["chunkSize"]))
        await chunks.delete_many({"_id": {"$in": [chunk_id(ref.file_id, n) for n in range(count)]}})
        # Chunks of a stock GridFS writer; rare (retention drops whole buckets instead).
        await chunks.delete_many({"files_id": ref.file_id})

    async def delete_month(self, account_id: str, month: MonthLike) -> None:
        """Drop a whole account-month bucket (retention). Idempotent."""
        name = document_bucket_name(account_id, month)
        await self.db.drop_collection(f"{name}.files")
        await self.db.drop_collection(f"{name}.chunks")
        await self.db.drop_collection(f"{name}.refs")
