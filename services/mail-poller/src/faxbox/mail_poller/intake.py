"""Taking one message into the pipeline: store, publish (confirmed), then move.

Every step is driven by the ledger entry's state, so running ``take_message`` again on
the same UID after a crash at any point continues where the last run stopped and never
publishes a second time once the publish was recorded. A republish (crash between the
broker's confirm and the ledger update) carries the same message id and fax id, so the
validator's own idempotency absorbs it.

The size (RFC822.SIZE) is read first. A mail over ``max_mail_bytes`` is never fetched
whole: its header block (at most ``max_header_bytes``) is stored and published with
``MailReceived.oversize`` (its size and the cap), so the validator can tell a known
sender, and the mail is moved to the oversize folder instead of the processed one.
Reading a message from the server fails with ``FetchFailed``: the watcher counts that
against the UID, not against the folder.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from faxbox.mail_poller import metrics
from faxbox.mail_poller.keys import ledger_id, message_key
from faxbox.mail_poller.ledger import (
    DuplicateLedgerId,
    DuplicateMessageKey,
    LedgerEntry,
    State,
)
from faxbox.mail_poller.ports import (
    Destination,
    FetchedMessage,
    Ledger,
    MailFolder,
    Publisher,
    RawStore,
)
from faxbox.shared.contracts import MailReceived, OversizeMail, new_id
from faxbox.shared.logs import fax_context
from faxbox.shared.store import new_id as new_fax_id

log = logging.getLogger(__name__)


DEFAULT_MAX_MAIL_BYTES: Final = 30 * 1024 * 1024
DEFAULT_MAX_HEADER_BYTES: Final = 256 * 1024


class Outcome(StrEnum):
    published = "published"  # first publish of this mail
    oversize = "oversize"  # first publish of a mail over the size cap (its headers only)
    republished = "republished"  # stored earlier, publish had not been recorded
    duplicate = "duplicate"  # same mail taken before: moved, not published
    moved_only = "moved_only"  # published earlier, only the move was missing
    vanished = "vanished"  # gone from the folder before it could be read


class LeaseLost(Exception):
    """This replica no longer holds the mailbox's lease: stop before touching anything."""


class FetchFailed(Exception):
    """The server did not hand this UID over (a timeout, an error, a dropped connection)."""

    def __init__(self, uid: int, cause: BaseException) -> None:
        super().__init__(f"UID {uid} could not be read: {type(cause).__name__}: {cause}")
        self.uid = uid
        self.cause = cause


def _noop() -> None:
    return None


async def _no_realm(domain: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class IntakeDeps:
    ledger: Ledger
    raw_store: RawStore
    publisher: Publisher
    # Whether a domain is an account's realm: names a copy's envelope recipient.
    is_realm: Callable[[str], Awaitable[bool]] = _no_realm
    max_mail_bytes: int = DEFAULT_MAX_MAIL_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Raises LeaseLost when this replica must stop; called before publish and move.
    ensure_active: Callable[[], None] = _noop
    # Test hook only (see Settings.test_crash_after_publish): runs once a publish is
    # confirmed and recorded, before the move.
    after_publish: Callable[[], None] = _noop


async def take_message(folder: MailFolder, uid: int, deps: IntakeDeps) -> Outcome:
    entry_id = ledger_id(folder.mailbox, folder.uid_validity, uid)
    entry = await deps.ledger.get(entry_id)
    created = False
    if entry is None:
        fetched, size = await _read(folder, uid, deps)
        if fetched is None:
            return Outcome.vanished
        entry, created = await _record(folder, uid, fetched, size, deps)
    with fax_context(entry.fax_id):
        if entry.state is State.stored:
            entry = await _publish(entry, deps)
            first = Outcome.oversize if entry.oversize_limit is not None else Outcome.published
            outcome = first if created else Outcome.republished
        elif entry.state is State.duplicate:
            outcome = Outcome.duplicate
        else:
            outcome = Outcome.moved_only
        deps.ensure_active()
        oversize = entry.oversize_limit is not None
        await folder.move(uid, Destination.oversize if oversize else Destination.processed)
        await deps.ledger.advance(
            entry.id, (State.published, State.duplicate, State.moved), State.moved, deps.clock()
        )
        metrics.MESSAGES_TAKEN.labels(folder.mailbox, outcome.value).inc()
        log.info(
            "mail taken",
            extra={"mailbox": folder.mailbox, "uid": uid, "outcome": outcome.value},
        )
    return outcome


async def _read(
    folder: MailFolder, uid: int, deps: IntakeDeps
) -> tuple[FetchedMessage | None, int | None]:
    """The message (its header block only when over the cap) and its size."""
    try:
        size = await folder.size(uid)
        if size is None:
            return None, None
        if size > deps.max_mail_bytes:
            return await folder.fetch_header(uid, deps.max_header_bytes), size
        return await folder.fetch(uid), size
    except Exception as exc:
        raise FetchFailed(uid, exc) from exc


@dataclass(frozen=True, slots=True)
class _Shape:
    """What this copy is, beyond its key: kept in its ledger entry."""

    recipient: str | None
    size: int | None
    oversize_limit: int | None


async def _record(
    folder: MailFolder,
    uid: int,
    fetched: FetchedMessage,
    size: int | None,
    deps: IntakeDeps,
) -> tuple[LedgerEntry, bool]:
    """The entry for this UID, and whether this call created it in state stored."""
    entry_id = ledger_id(folder.mailbox, folder.uid_validity, uid)
    oversize = size is not None and size > deps.max_mail_bytes
    raw = fetched.raw
    found = await message_key(folder.mailbox, raw, deps.is_realm, size if oversize else None)
    key, header = found.key, found.message_id
    now = deps.clock()
    received_at = fetched.internal_date or now
    shape = _Shape(found.recipient, size, deps.max_mail_bytes if oversize else None)
    earlier = await deps.ledger.find_by_message_key(key)
    if earlier is not None and earlier.id != entry_id:
        duplicate = await _record_duplicate(folder, uid, earlier, header, received_at, deps, shape)
        return duplicate, False
    ref = await deps.raw_store.put_raw(
        raw,
        received_at,
        {"mailbox": folder.mailbox, "uid_validity": folder.uid_validity, "uid": uid},
    )
    entry = LedgerEntry(
        id=entry_id,
        mailbox=folder.mailbox,
        uid_validity=folder.uid_validity,
        uid=uid,
        message_key=key,
        rfc822_message_id=header,
        state=State.stored,
        received_at=received_at,
        created_at=now,
        fax_id=new_fax_id("fax"),
        message_id=new_id(),
        raw=ref,
        recipient=shape.recipient,
        size=shape.size,
        oversize_limit=shape.oversize_limit,
    )
    try:
        await deps.ledger.insert(entry)
    except DuplicateLedgerId:
        # Another run got here first; its stored copy is the one that counts.
        await deps.raw_store.discard(ref)
        existing = await deps.ledger.get(entry_id)
        assert existing is not None
        return existing, False
    except DuplicateMessageKey:
        await deps.raw_store.discard(ref)
        earlier = await deps.ledger.find_by_message_key(key)
        if earlier is None:
            # The first copy's taker died between claiming the key and writing its
            # entry; that copy is still in its folder and is taken first next time.
            raise KeyHeldByUnwrittenEntry(key) from None
        duplicate = await _record_duplicate(folder, uid, earlier, header, received_at, deps, shape)
        return duplicate, False
    return entry, True


class KeyHeldByUnwrittenEntry(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(f"message key {key} is claimed by a ledger entry not written yet; later")


async def _record_duplicate(
    folder: MailFolder,
    uid: int,
    earlier: LedgerEntry,
    header: str | None,
    received_at: datetime,
    deps: IntakeDeps,
    shape: _Shape,
) -> LedgerEntry:
    entry_id = ledger_id(folder.mailbox, folder.uid_validity, uid)
    log.info(
        "mail taken before; moving it without publishing",
        extra={"mailbox": folder.mailbox, "uid": uid, "duplicate_of": earlier.id},
    )
    if earlier.state is State.stored:
        # The first copy was stored but never published (and may be gone from its
        # folder): publish it now, under its own ids, so the mail is not lost.
        with fax_context(earlier.fax_id):
            await _publish(earlier, deps)
    entry = LedgerEntry(
        id=entry_id,
        mailbox=folder.mailbox,
        uid_validity=folder.uid_validity,
        uid=uid,
        message_key=f"dup:{entry_id}",
        rfc822_message_id=header,
        state=State.duplicate,
        received_at=received_at,
        created_at=deps.clock(),
        fax_id=earlier.fax_id,
        duplicate_of=earlier.id,
        recipient=shape.recipient,
        size=shape.size,
        oversize_limit=shape.oversize_limit,
    )
    try:
        await deps.ledger.insert(entry)
    except DuplicateLedgerId:
        existing = await deps.ledger.get(entry_id)
        assert existing is not None
        return existing
    return entry


async def _publish(entry: LedgerEntry, deps: IntakeDeps) -> LedgerEntry:
    assert entry.fax_id
    assert entry.message_id
    assert entry.raw is not None
    deps.ensure_active()
    await deps.publisher.publish(
        MailReceived(
            message_id=entry.message_id,
            fax_id=entry.fax_id,
            mailbox=entry.mailbox,
            uid_validity=entry.uid_validity,
            uid=entry.uid,
            rfc822_message_id=entry.rfc822_message_id,
            raw=entry.raw,
            received_at=entry.received_at,
            oversize=None
            if entry.oversize_limit is None
            else OversizeMail(size=entry.size or 0, limit=entry.oversize_limit),
        )
    )
    now = deps.clock()
    metrics.INTAKE_LATENCY.observe(max(0.0, (now - entry.received_at).total_seconds()))
    updated = await deps.ledger.advance(entry.id, (State.stored,), State.published, now)
    deps.after_publish()
    return updated or entry.with_state(State.published)
