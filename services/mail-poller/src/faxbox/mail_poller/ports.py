"""The small interfaces the intake logic needs; the service wires the real ones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from faxbox.mail_poller.ledger import LedgerEntry
from faxbox.shared.contracts import DocumentRef


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    uid: int
    raw: bytes  # the whole mail, or its header block for a mail over the size cap
    internal_date: datetime | None


class Destination(StrEnum):
    """Where a message leaves the watched folder for."""

    processed = "processed"  # taken (published, or a duplicate of a mail taken before)
    oversize = "oversize"  # over the size cap: its headers were taken, never its body
    failed = "failed"  # could not be fetched after every try: set aside, dead-lettered


class Ledger(Protocol):
    async def get(self, entry_id: str) -> LedgerEntry | None: ...

    async def insert(self, entry: LedgerEntry) -> LedgerEntry:
        """Write the entry; if one with its ``_id`` exists, return that one."""

    async def mark_moved(self, entry_id: str, at: datetime) -> None: ...


class RawStore(Protocol):
    async def put_raw(
        self, raw: bytes, received_at: datetime, metadata: Mapping[str, Any]
    ) -> DocumentRef: ...

    async def discard(self, ref: DocumentRef) -> None: ...


class DeadLetters(Protocol):
    async def dead_letter(self, record: Mapping[str, Any], reason: str, kind: str) -> None:
        """Record something operators must see (a message set aside); returns once confirmed."""


class MailFolder(Protocol):
    """The watched folder of one open IMAP session."""

    @property
    def mailbox(self) -> str: ...

    @property
    def uid_validity(self) -> int: ...

    async def size(self, uid: int) -> int | None:
        """RFC822.SIZE, read before anything else: None if the message is gone."""

    async def fetch(self, uid: int) -> FetchedMessage | None:
        """The message's raw bytes, or None if it is gone."""

    async def fetch_header(self, uid: int, max_bytes: int) -> FetchedMessage | None:
        """The header block only (at most ``max_bytes``), or None if the message is gone."""

    async def move(self, uid: int, to: Destination) -> None: ...
