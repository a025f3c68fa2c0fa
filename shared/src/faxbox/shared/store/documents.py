"""Fax documents in GridFS, one bucket per account and month.

A bucket per account-month (``documents_<account>_<YYYYMM>``) means retention drops two
collections instead of deleting chunks one by one, and one account's volume never
slows another's queries. File ids are strings generated here, so the
:class:`~faxbox.shared.contracts.DocumentRef` returned is plain JSON and travels in bus
messages as is.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

from gridfs.asynchronous import AsyncGridFSBucket
from gridfs.errors import NoFile
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


class DocumentStore:
    """put/get/stream/delete of fax documents in per account-month GridFS buckets."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db

    def bucket(self, account_id: str, month: MonthLike) -> AsyncGridFSBucket:
        return AsyncGridFSBucket(
            self.db,
            bucket_name=document_bucket_name(account_id, month),
            chunk_size_bytes=CHUNK_SIZE,
        )

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
        source is never buffered whole. On any failure the partial upload is removed.
        """
        month = parse_month(month)
        user_metadata = dict(metadata or {})
        _check_metadata_keys(user_metadata)
        file_id = new_id("doc")
        grid_in = self.bucket(account_id, month).open_upload_stream_with_id(
            file_id,
            filename,
            metadata={**user_metadata, "content_type": content_type, "account_id": account_id},
        )
        digest = hashlib.sha256()
        length = 0
        try:
            async for chunk in _as_async_chunks(data):
                digest.update(chunk)
                length += len(chunk)
                await grid_in.write(chunk)
            # Also kept in the files document, so stored bytes can be audited without the ref.
            await grid_in.set("sha256", digest.hexdigest())
            await grid_in.close()
        except BaseException:
            await grid_in.abort()  # deletes the chunks written so far
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
        try:
            grid_out = await self.bucket(ref.account_id, ref.month).open_download_stream(
                ref.file_id
            )
        except NoFile:
            raise NotFound("document", f"{ref.account_id}/{ref.month}/{ref.file_id}") from None
        try:
            while chunk := await grid_out.readchunk():
                yield chunk
        finally:
            await grid_out.close()

    async def delete(self, ref: DocumentRef) -> None:
        try:
            await self.bucket(ref.account_id, ref.month).delete(ref.file_id)
        except NoFile:
            raise NotFound("document", f"{ref.account_id}/{ref.month}/{ref.file_id}") from None

    async def delete_month(self, account_id: str, month: MonthLike) -> None:
        """Drop a whole account-month bucket (retention). Idempotent."""
        name = document_bucket_name(account_id, month)
        await self.db.drop_collection(f"{name}.files")
        await self.db.drop_collection(f"{name}.chunks")
