"""In-memory fakes of the mail-poller's own ports (ledger, raw store, folder, dead letters)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from faxbox.mail_poller.ledger import LedgerEntry
from faxbox.mail_poller.ports import Destination, FetchedMessage
from faxbox.shared.contracts import DocumentRef


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=10)
        return self.now


class FakeLedger:
    """Entries by ``_id``, as the real one: the first write of an entry stands."""

    def __init__(self) -> None:
        self.entries: dict[str, LedgerEntry] = {}

    async def get(self, entry_id: str) -> LedgerEntry | None:
        return self.entries.get(entry_id)

    async def insert(self, entry: LedgerEntry) -> LedgerEntry:
        return self.entries.setdefault(entry.id, entry)

    async def mark_moved(self, entry_id: str, at: datetime) -> None:
        self.entries[entry_id] = replace(self.entries[entry_id], moved_at=at)


class FakeRawStore:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.puts = 0

    async def put_raw(
        self, raw: bytes, received_at: datetime, metadata: Mapping[str, Any]
    ) -> DocumentRef:
        self.puts += 1
        file_id = f"doc_{self.puts}"
        self.files[file_id] = raw
        return DocumentRef(
            account_id="intake",
            month=received_at.strftime("%Y%m"),
            file_id=file_id,
            filename="message.eml",
            content_type="message/rfc822",
            length=len(raw),
            sha256=hashlib.sha256(raw).hexdigest(),
        )

    async def discard(self, ref: DocumentRef) -> None:
        self.files.pop(ref.file_id, None)


class FakeFolder:
    def __init__(self, mailbox: str = "intake@example.test/INBOX", uid_validity: int = 7) -> None:
        self._mailbox = mailbox
        self._uid_validity = uid_validity
        self.messages: dict[int, bytes] = {}
        self.moved: dict[Destination, list[bytes]] = {d: [] for d in Destination}
        self.fail_next_move = False
        self.fetches = 0
        self.header_fetches = 0
        self.broken: dict[int, Exception] = {}  # UIDs whose every read fails so
        self._next_uid = 1

    @property
    def processed(self) -> list[bytes]:
        return self.moved[Destination.processed]

    @property
    def mailbox(self) -> str:
        return self._mailbox

    @property
    def uid_validity(self) -> int:
        return self._uid_validity

    def deliver(self, raw: bytes) -> int:
        # UIDs only grow within one UIDVALIDITY, even after messages leave the folder.
        uid, self._next_uid = self._next_uid, self._next_uid + 1
        self.messages[uid] = raw
        return uid

    async def size(self, uid: int) -> int | None:
        if uid in self.broken:
            raise self.broken[uid]
        raw = self.messages.get(uid)
        return None if raw is None else len(raw)

    async def fetch(self, uid: int) -> FetchedMessage | None:
        self.fetches += 1
        raw = self.messages.get(uid)
        if raw is None:
            return None
        return FetchedMessage(uid=uid, raw=raw, internal_date=datetime(2026, 11, 27, tzinfo=UTC))

    async def fetch_header(self, uid: int, max_bytes: int) -> FetchedMessage | None:
        self.header_fetches += 1
        raw = self.messages.get(uid)
        if raw is None:
            return None
        header = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        return FetchedMessage(uid, header[:max_bytes], datetime(2026, 11, 27, tzinfo=UTC))

    async def move(self, uid: int, to: Destination) -> None:
        if self.fail_next_move:
            self.fail_next_move = False
            raise ConnectionError("connection reset during MOVE")
        self.moved[to].append(self.messages.pop(uid))


def mail(
    message_id: str | None = "<abc@Example.COM>", body: str = "hello", envelope: str = ""
) -> bytes:
    """A mail as the intake folder holds it; ``envelope``: the X-Original-To of its copy."""
    header = f"Message-ID: {message_id}\r\n" if message_id else ""
    trace = f"Delivered-To: fax@example.test\r\nX-Original-To: {envelope}\r\n" if envelope else ""
    return (
        f"{trace}From: alice@example.com\r\nTo: +12125551234@fax.example.com\r\n{header}"
        f"Subject: test\r\n\r\n{body}\r\n"
    ).encode()


async def fax_realm(domain: str) -> bool:
    return domain == "fax.example.com"


class FakeDeadLetters:
    def __init__(self) -> None:
        self.records: list[tuple[dict[str, Any], str, str]] = []

    async def dead_letter(self, record: Mapping[str, Any], reason: str, kind: str) -> None:
        self.records.append((dict(record), reason, kind))
