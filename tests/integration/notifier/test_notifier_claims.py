"""Who may send a notification mail, on the real database (formerly the notification ledger)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from pymongo import AsyncMongoClient

from faxbox.notifier.claims import COLLECTION, MongoSendClaims
from faxbox.notifier.ports import Claim, ClaimBusy
from faxbox.shared.contracts import NotificationKind, NotificationSent
from faxbox.shared.outbox import Decided
from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Store
from faxbox.shared.store.decisions import MongoDecisionStore

pytestmark = pytest.mark.integration

RACERS = 12


def key() -> str:
    return f"fax_{uuid.uuid4().hex[:10]}:sent"


async def test_first_claim_wins_and_keeps_its_message_id(store: Store) -> None:
    claims = MongoSendClaims(store.db[COLLECTION], lease_s=60)
    k = key()
    claim = await claims.claim(k, "<a@faxbox.test>")
    assert isinstance(claim, Claim)
    assert (claim.smtp_message_id, claim.maybe_sent_before) == ("<a@faxbox.test>", False)
    with pytest.raises(ClaimBusy) as busy:
        await claims.claim(k, "<b@faxbox.test>")
    assert 1 <= busy.value.retry_in_s <= 5

    # "Sent" is the notifier's decision, recorded under the same key by its outbox.
    sent_at = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)
    decisions = MongoDecisionStore(store.db, "notifier")
    note = NotificationSent(
        fax_id=k.split(":")[0],
        account_id="acc1",
        month="202611",
        occurred_at=sent_at,
        kind=NotificationKind.sent,
        recipients=("alice@example.com",),
        smtp_message_id=claim.smtp_message_id,
    )
    await decisions.record(Decided(k, (note,)))
    again = await decisions.get(k)
    assert again is not None
    (sent,) = again.messages
    assert isinstance(sent, NotificationSent)
    assert (sent.smtp_message_id, sent.recipients, sent.occurred_at) == (
        "<a@faxbox.test>",
        ("alice@example.com",),
        sent_at,
    )


async def test_a_released_claim_is_taken_over_at_once_with_the_same_message_id(
    store: Store,
) -> None:
    claims = MongoSendClaims(store.db[COLLECTION], lease_s=60)
    k = key()
    first = await claims.claim(k, "<a@faxbox.test>")
    assert isinstance(first, Claim)
    await claims.release(first, "451 try later")
    second = await claims.claim(k, "<b@faxbox.test>")
    assert isinstance(second, Claim)
    assert second.smtp_message_id == "<a@faxbox.test>"
    assert second.maybe_sent_before is False
    assert second.owner != first.owner


async def test_an_expired_claim_is_taken_over_and_flagged_as_maybe_sent(store: Store) -> None:
    claims = MongoSendClaims(store.db[COLLECTION], lease_s=0.2)
    k = key()
    first = await claims.claim(k, "<a@faxbox.test>")
    assert isinstance(first, Claim)
    await asyncio.sleep(0.4)  # the worker died after handing the mail over, maybe
    second = await claims.claim(k, "<b@faxbox.test>")
    assert isinstance(second, Claim)
    assert (second.smtp_message_id, second.maybe_sent_before) == ("<a@faxbox.test>", True)
    # The old owner can no longer release what it lost.
    await claims.release(first, "late")
    with pytest.raises(ClaimBusy):
        await claims.claim(k, "<c@faxbox.test>")


async def test_twelve_workers_claiming_one_mail_one_may_send(
    store: Store, mongo_settings: MongoSettings
) -> None:
    # Separate connections, as separate replicas would have.
    pool = [AsyncMongoClient[dict[str, object]](mongo_settings.mongo_url) for _ in range(4)]
    try:
        for takeover in (False, True):
            k = key()
            replicas = [
                MongoSendClaims(pool[i % 4][mongo_settings.mongo_db][COLLECTION], lease_s=0.3)
                for i in range(RACERS)
            ]
            if takeover:
                first = await replicas[0].claim(k, "<first@faxbox.test>")
                await asyncio.sleep(0.4)  # its worker died
            results = await asyncio.gather(
                *(r.claim(k, f"<r{i}@faxbox.test>") for i, r in enumerate(replicas)),
                return_exceptions=True,
            )
            won = [r for r in results if isinstance(r, Claim)]
            assert len(won) == 1, f"takeover={takeover}: {results}"
            assert all(isinstance(r, (Claim, ClaimBusy)) for r in results)
            if takeover:
                assert won[0].smtp_message_id == first.smtp_message_id
                assert won[0].maybe_sent_before
    finally:
        for client in pool:
            await client.close()
