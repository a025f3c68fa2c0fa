"""The small interfaces the intake logic needs; the service wires the real ones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from faxbox.mail_poller.ledger import LedgerEntry, State
from faxbox.shared.contracts import DocumentRef, MailReceived


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    uid: int
    raw: bytes
    internal_date: datetime | None


class Ledger(Protocol):
    async def get(self, entry_id: str) -> LedgerEntry | None: ...

    async def find_by_message_key(self, key: str) -> LedgerEntry | None: ...

    async def insert(self, entry: LedgerEntry) -> None:
        """Raises DuplicateLedgerId or DuplicateMessageKey."""

    async def advance(
        self, entry_id: str, from_states: tuple[State, ...], to: State, at: datetime
    ) -> LedgerEntry | None: ...


class RawStore(Protocol):
    async def put_raw(
        self, raw: bytes, received_at: datetime, metadata: Mapping[str, Any]
    ) -> DocumentRef: ...

    async def discard(self, ref: DocumentRef) -> None: ...


class Publisher(Protocol):
    async def publish(self, message: MailReceived) -> None:
        """Returns once the broker confirmed."""


class MailFolder(Protocol):
    """The watched folder of one open IMAP session."""

    @property
    def mailbox(self) -> str: ...

    @property
    def uid_validity(self) -> int: ...

    async def fetch(self, uid: int) -> FetchedMessage | None:
        """The message's raw bytes, or None if it is gone."""

    async def move_to_processed(self, uid: int) -> None: ...
