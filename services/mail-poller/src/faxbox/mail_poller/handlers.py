"""Taking one message into the pipeline: store, decide, publish (confirmed), then move.

Which copy of a mail is taken is the mail-poller's outbox decision (``faxbox.shared.outbox``)
under the copy's intake key: the ``MailReceived`` of the first copy recorded under a key
stands, and every later copy with that key (a resend, a second hop, a new UIDVALIDITY) is
a duplicate, moved without a publish of its own. The ledger keeps where each copy sits
and which mail it is, so running ``take_message`` again on the same UID after a failure
at any point (publish, move, a crash) continues without fetching it again: it publishes
what is still owed, with the same message id and fax id, and moves the copy.

The size (RFC822.SIZE) is read first. A mail over ``mail_poller_max_mail_bytes`` is never fetched
whole: its header block (at most ``mail_poller_max_header_bytes``) is stored and published with
``MailReceived.oversize`` (its size and the cap), so the validator can tell a known
sender, and the mail is moved to the oversize folder instead of the processed one.
Reading a message from the server fails with ``FetchFailed``: the watcher counts that
against the UID, not against the folder.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from faxbox.mail_poller import metrics
from faxbox.mail_poller.keys import ledger_id, message_key
from faxbox.mail_poller.ledger import LedgerEntry
from faxbox.mail_poller.ports import (
    Destination,
    FetchedMessage,
    Ledger,
    MailFolder,
    RawStore,
)
from faxbox.shared.contracts import MailReceived, OversizeMail
from faxbox.shared.logs import fax_context
from faxbox.shared.outbox import Decided, Outbox, Recorded
from faxbox.shared.store import new_id as new_fax_id

log = logging.getLogger(__name__)


DEFAULT_MAX_MAIL_BYTES: Final = 30 * 1024 * 1024
DEFAULT_MAX_HEADER_BYTES: Final = 256 * 1024


class Outcome(StrEnum):
    published = "published"  # first publish of this mail
    oversize = "oversize"  # first publish of a mail over the size cap (its headers only)
    republished = "republished"  # taken earlier, its publish was not confirmed
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
    """What intake uses: where copies are recorded, where raw mails are kept, the outbox
    that publishes what was decided, and the caps a mail must fit."""

    ledger: Ledger
    raw_store: RawStore
    outbox: Outbox
    # Whether a domain is an account's realm: names a copy's envelope recipient.
    is_realm: Callable[[str], Awaitable[bool]] = _no_realm
    max_mail_bytes: int = DEFAULT_MAX_MAIL_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Raises LeaseLost when this replica must stop; called before publish and move.
    ensure_active: Callable[[], None] = _noop
    # Test hook only (FAXBOX_TEST_CRASH_AT=mail-poller.after_publish): runs once a publish is
    # confirmed and the mail owed no more, before the move.
    after_publish: Callable[[], None] = _noop


async def take_message(folder: MailFolder, uid: int, deps: IntakeDeps) -> Outcome:
    entry_id = ledger_id(folder.mailbox, folder.uid_validity, uid)
    entry = await deps.ledger.get(entry_id)
    taken: Recorded | None = None
    if entry is None:
        fetched, size = await _read(folder, uid, deps)
        if fetched is None:
            return Outcome.vanished
        entry, taken = await _record(folder, uid, fetched, size, deps)
    decided = await deps.outbox.get(entry.message_key) if taken is None else taken
    if decided is None:
        raise RuntimeError(f"{entry_id} names mail {entry.message_key}, decided by nobody")
    with fax_context(entry.fax_id):
        if entry.duplicate_of is not None:
            outcome = Outcome.duplicate
        elif taken is not None:
            outcome = Outcome.oversize if entry.oversize_limit is not None else Outcome.published
        else:
            outcome = Outcome.republished if decided.owed else Outcome.moved_only
        if decided.owed:
            # Ours, or the first copy's if it was never published (that copy may be gone
            # from its folder): the mail is not lost either way.
            await _publish(decided, deps)
        deps.ensure_active()
        oversize = entry.oversize_limit is not None
        await folder.move(uid, Destination.oversize if oversize else Destination.processed)
        await deps.ledger.mark_moved(entry.id, deps.clock())
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


async def _record(
    folder: MailFolder,
    uid: int,
    fetched: FetchedMessage,
    size: int | None,
    deps: IntakeDeps,
) -> tuple[LedgerEntry, Recorded | None]:
    """This copy's entry, and the decision if this call recorded it (first copy, first try)."""
    oversize = size is not None and size > deps.max_mail_bytes
    found = await message_key(
        folder.mailbox, fetched.raw, deps.is_realm, size if oversize else None
    )
    now = deps.clock()
    received_at = fetched.internal_date or now
    entry = LedgerEntry(
        id=ledger_id(folder.mailbox, folder.uid_validity, uid),
        mailbox=folder.mailbox,
        uid_validity=folder.uid_validity,
        uid=uid,
        message_key=found.key,
        rfc822_message_id=found.message_id,
        received_at=received_at,
        created_at=now,
        recipient=found.recipient,
        size=size,
        oversize_limit=deps.max_mail_bytes if oversize else None,
    )
    taken: Recorded | None = None
    earlier = await deps.outbox.get(found.key)
    if earlier is None:
        ref = await deps.raw_store.put_raw(
            fetched.raw,
            received_at,
            {"mailbox": folder.mailbox, "uid_validity": folder.uid_validity, "uid": uid},
        )
        mail = MailReceived(
            fax_id=new_fax_id("fax"),
            mailbox=folder.mailbox,
            uid_validity=folder.uid_validity,
            uid=uid,
            rfc822_message_id=found.message_id,
            raw=ref,
            received_at=received_at,
            oversize=OversizeMail(size=size or 0, limit=deps.max_mail_bytes) if oversize else None,
        )
        earlier = await deps.outbox.record(Decided(found.key, (mail,)))
        if earlier.messages[0].message_id == mail.message_id:
            taken = earlier
        else:
            # Another copy (or another run on this one) recorded the mail first.
            await deps.raw_store.discard(ref)
    first = earlier.messages[0]
    assert isinstance(first, MailReceived)
    if taken is not None or (first.mailbox, first.uid_validity, first.uid) == (
        folder.mailbox,
        folder.uid_validity,
        uid,
    ):
        entry = replace(entry, fax_id=first.fax_id, message_id=first.message_id, raw=first.raw)
    else:
        log.info(
            "mail taken before; moving it without publishing",
            extra={"mailbox": folder.mailbox, "uid": uid, "duplicate_of": first.uid},
        )
        first_id = ledger_id(first.mailbox, first.uid_validity, first.uid)
        entry = replace(entry, fax_id=first.fax_id, duplicate_of=first_id)
    stored = await deps.ledger.insert(entry)
    return stored, taken if stored == entry else None


async def _publish(decided: Recorded, deps: IntakeDeps) -> None:
    deps.ensure_active()
    await deps.outbox.deliver(decided)
    now = deps.clock()
    for message in decided.messages:
        if isinstance(message, MailReceived):
            latency = (now - message.received_at).total_seconds()
            metrics.INTAKE_LATENCY.observe(max(0.0, latency))
    deps.after_publish()
