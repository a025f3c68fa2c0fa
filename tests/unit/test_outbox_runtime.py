"""The exactly-once toolkit (faxbox.shared.outbox) and the in-memory bus it is tested with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from faxbox.shared.contracts import (
    DocumentRef,
    FaxSent,
    MailReceived,
    NotificationKind,
    NotificationSent,
    TransferStatistics,
)
from faxbox.shared.outbox import Decided, Outbox, Recorded
from faxbox.shared.policy import PermanentError, RetryLater
from faxbox.shared.testing import MemoryBus, MemoryDecisionStore, MemoryPublisher

REF = DocumentRef(
    account_id="acc1",
    month="202611",
    file_id="doc1",
    filename="f",
    content_type="application/octet-stream",
    length=1,
    sha256="0" * 64,
)


def sent(fax_id: str) -> FaxSent:
    return FaxSent(
        fax_id=fax_id,
        account_id="acc1",
        month="202611",
        user_id="usr1",
        faxbox_id="fbx1",
        destination="+12125550100",
        attempts=1,
        carrier_id="car1",
        statistics=TransferStatistics(
            pages_transferred=1,
            pages_total=1,
            bit_rate=9600,
            ecm=True,
            x_resolution=8031,
            y_resolution=7700,
            duration_s=1.0,
        ),
        transmitted_tiff=REF,
    )


def mail(fax_id: str) -> MailReceived:
    return MailReceived(
        fax_id=fax_id,
        mailbox="INBOX",
        uid_validity=1,
        uid=1,
        raw=REF,
        received_at=datetime(2026, 11, 1, tzinfo=UTC),
    )


def note(fax_id: str, kind: NotificationKind = NotificationKind.sent) -> NotificationSent:
    return NotificationSent(
        fax_id=fax_id,
        account_id="acc1",
        month="202611",
        kind=kind,
        recipients=("alice@example.com",),
        smtp_message_id="<m@faxbox.test>",
    )


def outbox() -> tuple[Outbox, MemoryDecisionStore, MemoryPublisher]:
    store, publisher = MemoryDecisionStore(), MemoryPublisher()
    return Outbox(store, publisher, name="test"), store, publisher


# --- record, publish, forget -------------------------------------------------------------


async def test_a_decision_is_recorded_published_in_order_and_then_owed_no_more() -> None:
    box, store, publisher = outbox()
    first, second = note("fax_1"), note("fax_1", NotificationKind.failed)
    recorded = await box.emit(Decided("k1", (first, second)))
    assert recorded.messages == (first, second)
    assert publisher.published == [first, second]
    assert await store.owed(datetime.now(UTC) + timedelta(days=1)) == []
    again = await box.get("k1")
    assert again is not None
    assert (again.messages, again.owed) == ((first, second), False)


async def test_the_first_decision_of_a_key_stands() -> None:
    box, _store, publisher = outbox()
    mine, theirs = note("fax_1"), note("fax_2")
    await box.record(Decided("k1", (theirs,)))
    recorded = await box.emit(Decided("k1", (mine,)))
    assert recorded.messages == (theirs,)
    assert publisher.published == [theirs]


async def test_an_unconfirmed_publish_stays_owed_and_a_sweep_sends_it_with_the_same_id() -> None:
    box, store, publisher = outbox()
    publisher.failures.append(ConnectionError("no confirm"))
    message = note("fax_1")
    with pytest.raises(ConnectionError):
        await box.emit(Decided("k1", (message,)))
    assert publisher.published == []
    assert await box.sweep(grace_s=60) == 0  # too young: its own handling may still finish
    store.owed_since["k1"] -= timedelta(minutes=2)
    assert await box.sweep(grace_s=60) == 1
    assert [m.message_id for m in publisher.published] == [message.message_id]
    assert await box.sweep(grace_s=0) == 0


async def test_publishing_soon_leaves_an_unconfirmed_decision_owed_for_the_sweep() -> None:
    box, store, publisher = outbox()
    confirmed = await box.record(Decided("k1", (note("fax_1"),)))
    assert await box.publish_soon(confirmed) is True
    assert await store.owed(datetime.now(UTC) + timedelta(days=1)) == []

    publisher.failures.append(ConnectionError("no confirm"))
    unconfirmed = await box.record(Decided("k2", (note("fax_2"),)))
    assert await box.publish_soon(unconfirmed, 5.0) is False
    store.owed_since["k2"] -= timedelta(minutes=2)
    assert await box.sweep(grace_s=60) == 1

    published_before = len(publisher.published)
    assert await box.publish_soon(Recorded("k3", (note("fax_3"),), owed=False)) is True
    assert len(publisher.published) == published_before  # published before: not again


async def test_publishing_soon_raises_what_is_no_outage_when_asked_to() -> None:
    box, store, publisher = outbox()
    publisher.failures.append(ValueError("a bug, not an outage"))
    recorded = await box.record(Decided("k1", (note("fax_1"),)))
    with pytest.raises(ValueError, match="a bug"):
        await box.publish_soon(recorded, only_outages=True)
    publisher.failures.append(ConnectionError("no confirm"))
    assert await box.publish_soon(recorded, only_outages=True) is False
    assert [r.key for r in await store.owed(datetime.now(UTC) + timedelta(days=1))] == ["k1"]


async def test_a_decision_needs_a_key_and_a_message() -> None:
    with pytest.raises(ValueError, match="key"):
        Decided("", (note("f"),))
    with pytest.raises(ValueError, match="None"):
        Decided("k", ())


# --- the consumer's runtime --------------------------------------------------------------


async def test_what_a_consumer_returns_is_recorded_and_published_before_it_is_settled() -> None:
    box, store, publisher = outbox()
    decided = note("fax_1")

    async def handler(message: FaxSent) -> Decided:
        return Decided(message.fax_id, (decided,))

    await box.consuming(handler)(sent("fax_1"))
    assert publisher.published == [decided]
    assert (await store.get("fax_1")) == Recorded("fax_1", (decided,), owed=False)


async def test_a_redial_is_published_then_raised() -> None:
    box, _store, publisher = outbox()
    later = RetryLater("redial", 60)

    async def handler(message: FaxSent) -> Decided:
        return Decided("fax_1#1", (note(message.fax_id),), retry=later)

    with pytest.raises(RetryLater) as raised:
        await box.consuming(handler)(sent("fax_1"))
    assert raised.value is later
    assert len(publisher.published) == 1


async def test_a_decision_the_handler_recorded_itself_is_not_recorded_twice() -> None:
    box, store, publisher = outbox()
    message = note("fax_1")

    async def handler(_message: FaxSent) -> Decided:
        recorded = await box.record(Decided("k", (message,)))
        store.failures.append(AssertionError("recorded twice"))
        return recorded

    await box.consuming(handler)(sent("fax_1"))
    assert publisher.published == [message]


async def test_nothing_decided_publishes_nothing() -> None:
    box, _store, publisher = outbox()

    async def handler(_message: FaxSent) -> None:
        return None

    await box.consuming(handler)(sent("fax_1"))
    assert publisher.published == []


# --- the in-memory bus -------------------------------------------------------------------


async def test_the_memory_bus_routes_by_the_subscriptions() -> None:
    bus = MemoryBus()
    seen: dict[str, list[str]] = {"notifier": [], "history": []}

    async def notifier(message: FaxSent) -> None:
        seen["notifier"].append(message.fax_id)

    async def history(message: FaxSent | NotificationSent) -> None:
        seen["history"].append(type(message).__name__)

    bus.consumer("notifier", {FaxSent: notifier})
    bus.consumer("history", {FaxSent: history, NotificationSent: history})
    await bus.publish(sent("fax_1"))
    await bus.publish(note("fax_1"))
    assert await bus.join() == 3
    assert seen == {"notifier": ["fax_1"], "history": ["FaxSent", "NotificationSent"]}
    with pytest.raises(ValueError, match="does not subscribe"):
        bus.consumer("validator", {FaxSent: notifier})


async def test_the_memory_bus_settles_by_the_policy() -> None:
    bus = MemoryBus()

    async def refuse(message: FaxSent) -> None:
        raise PermanentError("no such faxbox")

    async def later(message: MailReceived) -> None:
        raise RetryLater("busy", 7)

    bus.consumer("notifier", {FaxSent: refuse})
    bus.consumer("validator", {MailReceived: later})
    await bus.publish(sent("fax_1"))
    await bus.publish(mail("fax_2"))
    await bus.join()
    (dead,) = bus.dead_letters
    assert (dead.service, dead.reason, dead.kind) == ("notifier", "no such faxbox", "permanent")
    assert dead.message.fax_id == "fax_1"
    (parked,) = bus.retries
    assert (parked.service, parked.delay_s, parked.kind) == ("validator", 10, "scheduled")


async def test_retries_wait_until_released_and_a_bug_ends_dead_lettered() -> None:
    bus = MemoryBus()
    calls = []

    async def broken(message: MailReceived) -> None:
        calls.append(message.fax_id)
        raise RuntimeError("bug")

    bus.consumer("validator", {MailReceived: broken})
    await bus.publish(mail("fax_9"))
    for _ in range(4):
        await bus.join()
        (parked,) = bus.retries
        assert parked.kind == "transient"
        assert bus.release_retries() == 1
    await bus.join()
    assert len(calls) == 5
    (dead,) = bus.dead_letters
    assert dead.kind == "exhausted"


async def test_the_memory_bus_carries_messages_as_the_broker_does() -> None:
    bus = MemoryBus()
    original = note("fax_1")
    await bus.publish(original)
    (carried,) = bus.of(NotificationSent)
    assert carried == original
    assert carried is not original
