"""Ports several services share. The adapters: ``faxbox.shared.wiring``'s publisher and
:class:`faxbox.shared.store.gridfs_documents.GridFsDocuments`; the in-memory fakes for
unit tests: ``faxbox.shared.testing`` (``MemoryPublisher``, ``MemoryDocuments``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from faxbox.shared.contracts import DocumentRef, Message


class Publisher(Protocol):
    async def publish(self, message: Message) -> None:
        """Return once the broker confirmed the message."""
        ...


class DocumentReader(Protocol):
    async def get(self, ref: DocumentRef) -> bytes: ...


class Documents(DocumentReader, Protocol):
    """Fax documents by reference, in the account-month buckets.

    A document put with ``fax_id`` and ``role`` in its metadata is stored once per fax
    and role: a repeated put (a redelivery) gets the reference of the first one.
    """

    async def put(
        self,
        account_id: str,
        month: str,
        data: bytes,
        *,
        filename: str,
        content_type: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> DocumentRef: ...

    async def find(self, account_id: str, month: str, fax_id: str, role: str) -> DocumentRef | None:
        """A document stored earlier for this fax in this role (after a redelivery)."""
        ...
