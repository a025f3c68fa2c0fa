"""Twelve replicas racing for the mail-poller's mailbox lease and the notifier's send
claim on the real database, fifty rounds each: while a holder renews nobody else gets
in, and when it releases or dies (its lease runs out) exactly one replica takes over,
the old holder learns it lost, and what the first holder carried is inherited."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from faxbox.mail_poller.lease import MailboxLease
from faxbox.notifier.claims import COLLECTION as SEND_CLAIMS
from faxbox.notifier.claims import MongoSendClaims
from faxbox.notifier.ports import Claim, ClaimBusy
from tests.integration.races.conftest import Contenders

pytestmark = pytest.mark.integration

ROUNDS = 50
TTL_S = 0.5  # a renewal under load must still come in time
DEAD_S = TTL_S + 0.1  # long enough for a lease nobody renews to run out


def only_holder(taken: list[bool], what: str) -> int:
    holders = [i for i, ok in enumerate(taken) if ok]
    assert len(holders) == 1, f"{what}: replicas {holders} hold the lease"
    return holders[0]


async def test_twelve_pollers_one_holds_the_mailbox_each_round(contenders: Contenders) -> None:
    mailbox = f"fax-{uuid.uuid4().hex[:6]}@faxbox.test"
    pollers = [
        MailboxLease(db, mailbox, f"poller-{i:02d}", TTL_S) for i, db in enumerate(contenders.dbs)
    ]
    holder = only_holder(
        list(await asyncio.gather(*(p.try_acquire() for p in pollers))), "first take"
    )
    takeovers = 0
    for round_ in range(ROUNDS):
        # The holder renews while everybody else tries: it keeps the mailbox.
        renewed = list(await asyncio.gather(*(p.try_acquire() for p in pollers)))
        assert only_holder(renewed, f"round {round_} renewal") == holder
        if round_ % 2:
            await pollers[holder].release()  # a graceful stop: a standby at once
        else:
            await asyncio.sleep(DEAD_S)  # the holder dies: its lease runs out
        taken = list(
            await asyncio.gather(
                *(p.try_acquire() for i, p in enumerate(pollers) if i != holder or round_ % 2)
            )
        )
        if not round_ % 2:
            taken.insert(holder, False)  # the dead holder tries nothing
        new_holder = only_holder(taken, f"round {round_} takeover")
        takeovers += 1
        if new_holder != holder and not round_ % 2:
            # The old holder comes back: it learns it lost, and stands by.
            assert not pollers[holder].held
            assert not await pollers[holder].try_acquire()
        holder = new_holder
        assert await pollers[0].current_holder() == f"poller-{holder:02d}"
    generation = pollers[holder].lease.current
    latest = await generation()
    assert latest is not None
    assert latest["generation"] == takeovers + 1  # one generation per take, none shared


def only_claim(results: list[Claim | BaseException], what: str) -> Claim:
    won = [r for r in results if isinstance(r, Claim)]
    assert len(won) == 1, f"{what}: {len(won)} workers may send"
    refused = [r for r in results if not isinstance(r, Claim)]
    assert all(isinstance(r, ClaimBusy) for r in refused), refused
    return won[0]


async def test_twelve_notifiers_one_sends_each_mail_and_one_takes_it_over(
    contenders: Contenders,
) -> None:
    notifiers = [MongoSendClaims(db[SEND_CLAIMS], lease_s=TTL_S) for db in contenders.dbs]

    async def race(key: str) -> Claim:
        results = await asyncio.gather(
            *(n.claim(key, f"<{key}.{i}@faxbox.test>") for i, n in enumerate(notifiers)),
            return_exceptions=True,
        )
        return only_claim(list(results), key)

    for round_ in range(ROUNDS // 2):
        key = f"fax_{uuid.uuid4().hex[:10]}:sent"
        first = await race(key)
        assert not first.maybe_sent_before
        # Deferred by the relay (released) in odd rounds; the worker died in even ones.
        if round_ % 2:
            await notifiers[0].release(first, "451 try later")
        else:
            await asyncio.sleep(DEAD_S)
        second = await race(key)
        assert second.smtp_message_id == first.smtp_message_id
        assert second.maybe_sent_before is (not round_ % 2)
        assert second.generation == first.generation + 1
        # The first worker's late release does not free the successor's claim.
        await notifiers[0].release(first, "late")
        with pytest.raises(ClaimBusy):
            await notifiers[1].claim(key, "<late@faxbox.test>")
