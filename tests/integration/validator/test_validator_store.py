"""The validator's MongoDB ports on the real server (FerretDB locally)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from faxbox.shared.contracts import (
    FaxSettings,
    OutboundFaxRejected,
    RejectionCode,
    RejectionReason,
)
from faxbox.shared.outbox import Decided
from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Account, Faxbox, Store, User
from faxbox.shared.store.decisions import MongoDecisionStore
from faxbox.shared.store.gridfs_documents import GridFsDocuments
from faxbox.validator.adapters import (
    DAILY_PAGES_LOCKS,
    DECISIONS,
    MongoClaims,
    MongoDirectory,
    MongoPageCounters,
)
from faxbox.validator.authz import match_sender

pytestmark = pytest.mark.integration


async def test_page_counter_reserves_atomically_and_once_per_fax(store: Store) -> None:
    counters = MongoPageCounters(store)
    key = f"user:u{uuid.uuid4().hex[:6]}:20261127"
    assert await counters.reserve(key, "f1", 3, 5)
    assert await counters.reserve(key, "f1", 3, 5)  # redelivery: counted once
    assert await counters.used(key) == 3
    assert not await counters.reserve(key, "f2", 3, 5)
    assert await counters.reserve(key, "f3", 2, 5)
    await counters.release(key, "f3", 2)
    await counters.release(key, "f3", 2)  # a second release changes nothing
    assert await counters.used(key) == 3
    assert not await counters.reserve(f"{key}x", "f4", 6, 5)


async def test_concurrent_reservations_never_pass_the_limit(
    store: Store, mongo_settings: MongoSettings
) -> None:
    """Two replicas (two clients) reserving at once: exactly the limit is granted."""
    other = await Store.connect(mongo_settings)
    try:
        replicas = [MongoPageCounters(store), MongoPageCounters(other)]
        key = f"account:a{uuid.uuid4().hex[:6]}:20261127"
        results = await asyncio.gather(
            *(replicas[i % 2].reserve(key, f"f{i}", 1, 5) for i in range(12))
        )
        assert sum(results) == 5
        assert await replicas[0].used(key) == 5
        await asyncio.gather(*(replicas[i % 2].release(key, f"f{i}", 1) for i in range(12)))
        assert await replicas[1].used(key) == 0
    finally:
        await other.close()


async def test_a_lock_left_by_a_dead_process_expires(store: Store) -> None:
    counters = MongoPageCounters(store, lock_ttl_s=0.2)
    key = f"user:u{uuid.uuid4().hex[:6]}:20261127"
    await store.db[DAILY_PAGES_LOCKS].insert_one(
        {"_id": key, "token": "dead", "expires_at": datetime.now(UTC) + timedelta(seconds=0.2)}
    )
    assert await counters.reserve(key, "f1", 1, 5)
    assert await store.db[DAILY_PAGES_LOCKS].count_documents({"_id": key}) == 0


async def test_directory_finds_owner_alternate_and_permitted_senders(store: Store) -> None:
    realm = f"r{uuid.uuid4().hex[:6]}.fax.test"
    directory = MongoDirectory(store)
    assert await directory.account_by_realm(realm) is None
    account = await store.create_account(Account(name="R", realm=realm))
    assert await directory.account_by_realm(realm) == account
    tag = uuid.uuid4().hex[:6]
    owner = await store.create_user(
        User(
            account_id=account.id,
            email=f"Owner{tag}@Example.com",
            alternate_email=f"Alt{tag}@x.example",
        )
    )
    other = await store.create_user(User(account_id=account.id, email=f"other{tag}@example.com"))
    own = await store.create_faxbox(Faxbox(account_id=account.id, owner_user_id=owner.id))
    shared = await store.create_faxbox(
        Faxbox(account_id=account.id, owner_user_id=other.id, permission_list=["@partner.example"])
    )

    async def sent_from(sender: str) -> str | None:
        match = match_sender(sender, await directory.sender_candidates(account.id, sender))
        return match.faxbox.id if match else None

    assert await sent_from(f"owner{tag}@example.com") == own.id
    assert await sent_from(f"alt{tag}@x.example") == own.id
    assert await sent_from("anyone@partner.example") == shared.id
    assert await sent_from("anyone@elsewhere.example") is None


async def test_ledger_keeps_the_first_decision(store: Store) -> None:
    ledger = MongoDecisionStore(store.db, "validator")
    documents = GridFsDocuments(store.documents)
    raw = await documents.put(
        "intake", "202611", b"mail", filename="m.eml", content_type="message/rfc822", metadata={}
    )
    fax_id = f"fax_{uuid.uuid4().hex[:8]}"

    def rejected(text: str) -> OutboundFaxRejected:
        return OutboundFaxRejected(
            fax_id=fax_id,
            account_id="acc_x",
            month="202611",
            user_id="usr_x",
            sender_email="a@b.example",
            destination_raw="x@y",
            reasons=(RejectionReason(code=RejectionCode.no_attachment, message=text),),
            raw=raw,
        )

    assert await ledger.get(fax_id) is None
    first = (rejected("first"), rejected("first, second message"))
    assert (await ledger.record(Decided(fax_id, first))).messages == first
    assert (await ledger.record(Decided(fax_id, (rejected("second"),)))).messages == first
    entry = await ledger.get(fax_id)
    assert entry is not None
    assert (entry.messages, not entry.owed) == (first, False)
    await ledger.forget(fax_id)
    entry = await ledger.get(fax_id)
    assert entry is not None
    assert not entry.owed
    assert FaxSettings().resolution == "fine"

    # A decision recorded before one mail could become several faxes: one message.
    older = f"fax_{uuid.uuid4().hex[:8]}"
    await store.db[DECISIONS].insert_one(
        {"_id": older, "type": "OutboundFaxRejected", "message": first[0].model_dump_json()}
    )
    entry = await ledger.get(older)
    assert entry is not None
    assert (entry.messages, not entry.owed) == ((first[0],), False)


async def test_a_claim_is_held_by_one_fax_id_until_it_gives_it_up(
    store: Store, mongo_settings: MongoSettings
) -> None:
    other = await Store.connect(mongo_settings)
    try:
        replicas = [MongoClaims(store), MongoClaims(other)]
        key = f"INBOX|mid:{uuid.uuid4().hex}@x|+12125550147"
        won = await asyncio.gather(*(replicas[i % 2].claim(key, f"f{i}") for i in range(8)))
        assert sum(won) == 1
        holder = f"f{won.index(True)}"
        assert await replicas[0].claim(key, holder)  # the holder's redelivery: still its own
        await replicas[1].release(key, "someone-else")
        assert not await replicas[1].claim(key, "f-late")
        await replicas[0].release(key, holder)
        assert await replicas[1].claim(key, "f-late")
    finally:
        await other.close()


async def test_documents_are_found_again_by_fax_id_and_role(store: Store) -> None:
    documents = GridFsDocuments(store.documents)
    fax_id = f"fax_{uuid.uuid4().hex[:8]}"
    assert await documents.find("acc_docs", "202611", fax_id, "fax_tiff") is None
    ref = await documents.put(
        "acc_docs",
        "202611",
        b"II*\x00tiff",
        filename="fax.tif",
        content_type="image/tiff",
        metadata={"fax_id": fax_id, "role": "fax_tiff"},
    )
    assert await documents.find("acc_docs", "202611", fax_id, "fax_tiff") == ref
    assert await documents.find("acc_docs", "202611", fax_id, "original") is None
