"""The mail-poller's ports on the real parts: raw mails in GridFS, dead letters on the
bus, realms in the store. The IMAP session (``imap``), the ledger (``ledger``) and the
mailbox lease (``lease``) are adapters too, each in a module of its own."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from faxbox.shared.bus import Bus
from faxbox.shared.contracts import DocumentRef
from faxbox.shared.store import DocumentStore, NotFound, Store

# The raw mails live in the intake bucket of their arrival month: the account is only
# known once the validator has read the recipient's realm.
INTAKE_ACCOUNT: Final = "intake"


class GridFsRawStore:
    def __init__(self, documents: DocumentStore) -> None:
        self.documents = documents

    async def put_raw(
        self, raw: bytes, received_at: datetime, metadata: Mapping[str, Any]
    ) -> DocumentRef:
        return await self.documents.put(
            INTAKE_ACCOUNT,
            received_at,
            raw,
            filename="message.eml",
            content_type="message/rfc822",
            metadata=metadata,
        )

    async def discard(self, ref: DocumentRef) -> None:
        with contextlib.suppress(NotFound):
            await self.documents.delete(ref)


class BusDeadLetters:
    """Records of set-aside mail in the mail-poller's dead-letter queue."""

    def __init__(self, bus: Bus, service: str) -> None:
        self.bus = bus
        self.service = service

    async def dead_letter(self, record: Mapping[str, Any], reason: str, kind: str) -> None:
        await self.bus.dead_letter_record(self.service, record, reason, kind)


class StoreRealms:
    """Whether a domain is an account's realm: asked per mail, never cached, so the
    poller and the validator always agree on a copy's envelope recipient."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def is_realm(self, domain: str) -> bool:
        try:
            await self.store.get_account_by_realm(domain)
        except (NotFound, ValueError):
            return False
        return True
