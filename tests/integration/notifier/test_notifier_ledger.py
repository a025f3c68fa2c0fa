"""The notification ledger on the real database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from faxbox.notifier.ledger import COLLECTION, MongoLedger
from faxbox.notifier.ports import AlreadySent, Claim, ClaimBusy
from faxbox.shared.store import Store

pytestmark = pytest.mark.integration


def key() -> str:
    return f"fax_{uuid.uuid4().hex[:10]}:sent"


async def test_first_claim_wins_and_keeps_its_message_id(store: Store) -> None:
    ledger = MongoLedger(store.db[COLLECTION], lease_s=60)
    k = key()
    claim = await ledger.claim(k, "<a@faxbox.test>")
    assert isinstance(claim, Claim)
    assert (claim.smtp_message_id, claim.maybe_sent_before) == ("<a@faxbox.test>", False)
    with pytest.raises(ClaimBusy) as busy:
        await ledger.claim(k, "<b@faxbox.test>")
    assert 1 <= busy.value.retry_in_s <= 5

    sent_at = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)
    await ledger.mark_sent(claim, ("alice@example.com",), sent_at)
    again = await ledger.claim(k, "<c@faxbox.test>")
    assert again == AlreadySent(k, "<a@faxbox.test>", ("alice@example.com",), sent_at)


async def test_a_released_claim_is_taken_over_at_once_with_the_same_message_id(
    store: Store,
) -> None:
    ledger = MongoLedger(store.db[COLLECTION], lease_s=60)
    k = key()
    first = await ledger.claim(k, "<a@faxbox.test>")
    assert isinstance(first, Claim)
    await ledger.release(first, "451 try later")
    second = await ledger.claim(k, "<b@faxbox.test>")
    assert isinstance(second, Claim)
    assert second.smtp_message_id == "<a@faxbox.test>"
    assert second.maybe_sent_before is False
    assert second.owner != first.owner


async def test_an_expired_claim_is_taken_over_and_flagged_as_maybe_sent(store: Store) -> None:
    ledger = MongoLedger(store.db[COLLECTION], lease_s=0.2)
    k = key()
    first = await ledger.claim(k, "<a@faxbox.test>")
    assert isinstance(first, Claim)
    await asyncio.sleep(0.4)  # the worker died after handing the mail over, maybe
    second = await ledger.claim(k, "<b@faxbox.test>")
    assert isinstance(second, Claim)
    assert (second.smtp_message_id, second.maybe_sent_before) == ("<a@faxbox.test>", True)
    # The old owner can no longer release what it lost.
    await ledger.release(first, "late")
    with pytest.raises(ClaimBusy):
        await ledger.claim(k, "<c@faxbox.test>")
