"""The ledger and the lease on the real FerretDB: uniqueness, conditional steps, expiry."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime

import pytest
from pymongo import AsyncMongoClient

from faxbox.mail_poller.lease import MailboxLease
from faxbox.mail_poller.ledger import (
    DuplicateLedgerId,
    DuplicateMessageKey,
    LedgerEntry,
    MongoLedger,
    State,
)
from faxbox.shared.contracts import DocumentRef
from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Store

pytestmark = pytest.mark.integration


def _entry(entry_id: str, key: str, state: State = State.stored) -> LedgerEntry:
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # BSON keeps milliseconds
    return LedgerEntry(
        id=entry_id,
        mailbox="box",
        uid_validity=1,
        uid=1,
        message_key=key,
        rfc822_message_id="<a@b>",
        state=state,
        received_at=now,
        created_at=now,
        fax_id="fax_1",
        message_id="m1",
        raw=DocumentRef(
            account_id="intake",
            month="202611",
            file_id="doc_1",
            filename="message.eml",
            content_type="message/rfc822",
            length=1,
            sha256=hashlib.sha256(b"x").hexdigest(),
        ),
    )


async def test_ledger_keys_and_steps(store: Store) -> None:
    ledger = MongoLedger(store.db)
    await ledger.ensure_indexes()
    await ledger.ensure_indexes()  # every start-up does it again
    tag = uuid.uuid4().hex
    first = _entry(f"box|1|{tag}", f"mid:{tag}@x")
    await ledger.insert(first)

    with pytest.raises(DuplicateLedgerId):
        await ledger.insert(_entry(first.id, f"mid:other-{tag}@x"))
    with pytest.raises(DuplicateMessageKey):
        await ledger.insert(_entry(f"box|1|{tag}-2", first.message_key))

    assert await ledger.get(first.id) == first
    assert await ledger.find_by_message_key(first.message_key) == first
    assert await ledger.find_by_message_key(f"mid:other-{tag}@x") is None
    now = datetime.now(UTC)
    published = await ledger.advance(first.id, (State.stored,), State.published, now)
    assert published is not None
    assert published.state is State.published
    assert published.raw == first.raw
    # A second "stored → published" (a racing or repeated publish) finds nothing to do.
    assert await ledger.advance(first.id, (State.stored,), State.published, now) is None


async def test_a_key_claimed_by_an_entry_never_written(store: Store) -> None:
    """The taker died between claiming the message key and writing its entry."""
    ledger = MongoLedger(store.db)
    tag = uuid.uuid4().hex
    entry = _entry(f"box|1|{tag}", f"mid:{tag}@x")
    await ledger.keys.insert_one({"_id": entry.message_key, "entry_id": entry.id})
    assert await ledger.find_by_message_key(entry.message_key) is None
    # Another copy of the mail cannot take the key ...
    with pytest.raises(DuplicateMessageKey):
        await ledger.insert(_entry(f"box|1|{tag}-copy", entry.message_key))
    # ... the first copy, taken again, finishes its own claim.
    await ledger.insert(entry)
    assert await ledger.find_by_message_key(entry.message_key) == entry


async def test_lease_is_exclusive_expires_and_is_released(store: Store) -> None:
    mailbox = f"box-{uuid.uuid4().hex}"
    a = MailboxLease(store.db, mailbox, "a", ttl_s=1.0)
    b = MailboxLease(store.db, mailbox, "b", ttl_s=1.0)

    assert await a.try_acquire()
    assert a.held
    assert not await b.try_acquire()
    assert await a.try_acquire()  # renewal
    assert await b.current_holder() == "a"

    await asyncio.sleep(1.2)  # a stopped renewing
    assert not a.held
    assert await b.try_acquire()
    assert not await a.try_acquire()

    await b.release()
    assert await b.current_holder() is None
    assert await a.try_acquire()


async def test_twelve_replicas_starting_at_once_one_polls_the_mailbox(
    store: Store, mongo_settings: MongoSettings
) -> None:
    # Separate connections, as separate replicas would have.
    pool = [AsyncMongoClient[dict[str, object]](mongo_settings.mongo_url) for _ in range(4)]
    mailbox = f"box#{uuid.uuid4().hex}"
    try:
        replicas = [
            MailboxLease(pool[i % 4][mongo_settings.mongo_db], mailbox, f"r{i}", ttl_s=0.5)
            for i in range(12)
        ]
        for round_ in range(3):
            taken = await asyncio.gather(*(r.try_acquire() for r in replicas))
            assert sum(taken) == 1, f"round {round_}: {taken}"
            await asyncio.sleep(0.7)  # the holder stops renewing
    finally:
        for client in pool:
            await client.close()
