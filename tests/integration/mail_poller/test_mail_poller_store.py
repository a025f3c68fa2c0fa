"""The ledger, the intake's one decision per mail and the lease on the real FerretDB."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime

import pytest
from pymongo import ASCENDING, AsyncMongoClient

from faxbox.mail_poller.handlers import IntakeDeps, Outcome, take_message
from faxbox.mail_poller.lease import MailboxLease
from faxbox.mail_poller.ledger import COLLECTION, LedgerEntry, MongoLedger
from faxbox.shared.contracts import DocumentRef
from faxbox.shared.outbox import Outbox
from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Store
from faxbox.shared.store.decisions import MongoDecisionStore
from faxbox.shared.testing import MemoryPublisher
from tests.unit.mail_poller.mail_poller_fakes import FakeClock, FakeFolder, FakeRawStore, mail

pytestmark = pytest.mark.integration


def _entry(entry_id: str, key: str) -> LedgerEntry:
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # BSON keeps milliseconds
    return LedgerEntry(
        id=entry_id,
        mailbox="box",
        uid_validity=1,
        uid=1,
        message_key=key,
        rfc822_message_id="<a@b>",
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


async def test_ledger_entries_are_written_once_by_id(store: Store) -> None:
    # What the ledger had while it decided which copy was first: a unique key index.
    await store.db[COLLECTION].create_index(
        [("message_key", ASCENDING)], name="message_key_unique", unique=True
    )
    ledger = MongoLedger(store.db)
    await ledger.ensure_indexes()
    await ledger.ensure_indexes()  # every start-up does it again
    tag = uuid.uuid4().hex
    first = _entry(f"box|1|{tag}", f"mid:{tag}@x")
    assert await ledger.insert(first) == first
    assert await ledger.insert(_entry(first.id, f"mid:other-{tag}@x")) == first
    # A duplicate copy carries the first copy's key.
    copy = _entry(f"box|1|{tag}-2", first.message_key)
    assert await ledger.insert(copy) == copy
    assert await ledger.get(first.id) == first
    moved_at = datetime.now(UTC).replace(microsecond=0)
    await ledger.mark_moved(first.id, moved_at)
    moved = await ledger.get(first.id)
    assert moved is not None
    assert moved.moved_at is not None
    assert moved.moved_at.replace(tzinfo=UTC) == moved_at


async def test_twelve_pollers_taking_copies_of_one_mail_publish_it_once(
    store: Store, mongo_settings: MongoSettings
) -> None:
    """Twelve copies of one mail (a resend, other folders' pollers), taken at once."""
    pool = [AsyncMongoClient[dict[str, object]](mongo_settings.mongo_url) for _ in range(4)]
    mailbox = f"box-{uuid.uuid4().hex[:8]}"
    publisher, raw_store = MemoryPublisher(), FakeRawStore()
    try:
        folders, takers = [], []
        for i in range(12):
            db = pool[i % 4][mongo_settings.mongo_db]
            folders.append(FakeFolder(mailbox, uid_validity=i + 1))
            outbox = Outbox(MongoDecisionStore(db, "mail-poller"), publisher)
            takers.append(IntakeDeps(MongoLedger(db), raw_store, outbox, clock=FakeClock()))
        uids = [folder.deliver(mail(f"<race-{mailbox}@example.com>")) for folder in folders]
        outcomes = await asyncio.gather(
            *(take_message(f, u, d) for f, u, d in zip(folders, uids, takers, strict=True))
        )
    finally:
        for client in pool:
            await client.close()
    assert sorted(outcomes) == sorted([Outcome.published] + [Outcome.duplicate] * 11)
    # One mail decided, under one message id. A copy that finds the first copy's
    # decision still owed (its publish not yet confirmed) publishes it too, by design
    # (that copy may be gone for good): the same message again, which consumers drop
    # by its id. Two different messages would be two faxes.
    assert len({m.message_id for m in publisher.published}) == 1
    published = publisher.published[0]
    assert len(raw_store.files) == 1
    assert published.raw.file_id in raw_store.files
    assert all(not folder.messages for folder in folders)


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
