"""The webhooks service's decisions, over in-memory ports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from faxbox.shared import contracts as c
from faxbox.shared.policy import PermanentError, RetryLater
from faxbox.shared.store.webhooks import Webhook
from faxbox.webhooks.handlers import Outcome, deliver
from tests.unit.webhooks.webhooks_fakes import T0, World

FAX: dict[str, Any] = {"fax_id": "fax1", "account_id": "acc1", "month": "202611", "occurred_at": T0}
REF = c.DocumentRef(
    account_id="acc1",
    month="202611",
    file_id="f1",
    filename="fax.tif",
    content_type="image/tiff",
    length=1,
    sha256="0" * 64,
)


def hook(**fields: Any) -> Webhook:
    return Webhook(account_id="acc1", url="https://hooks.example.com/fax", **fields)


def sent(**fields: Any) -> c.FaxSent:
    return c.FaxSent(
        **FAX,
        user_id="u1",
        faxbox_id="fb1",
        destination="+12125550123",
        attempts=1,
        carrier_id="car1",
        statistics=c.TransferStatistics(
            pages_transferred=3,
            pages_total=3,
            bit_rate=14400,
            ecm=True,
            x_resolution=8031,
            y_resolution=7700,
            duration_s=40,
        ),
        transmitted_tiff=REF,
        **fields,
    )


async def test_an_event_is_one_delivery_per_interested_webhook() -> None:
    world = World()
    everything = hook()
    only_failures = hook(events=["fax.failed"])
    other_faxbox = hook(faxbox_id="fb2")
    this_faxbox = hook(faxbox_id="fb1")
    disabled = hook(enabled=False)
    other_account = Webhook(account_id="acc2", url="https://elsewhere.example.com/")
    world.webhooks.hooks = [
        everything,
        only_failures,
        other_faxbox,
        this_faxbox,
        disabled,
        other_account,
    ]
    commands = await world.told(sent())
    assert {cmd.webhook_id for cmd in commands} == {everything.id, this_faxbox.id}
    assert world.bus.published == commands
    delivery = world.log.deliveries[(everything.id, "202611", commands[0].event_id)]
    body = json.loads(delivery.body)
    assert body["type"] == "fax.delivered"
    assert body["id"] == delivery.event_id == commands[0].event_id
    assert (body["account_id"], body["fax_id"]) == ("acc1", "fax1")
    assert body["data"]["status"] == "delivered"
    assert body["data"]["pages_sent"] == 3
    assert body["data"]["to"] == "+12125550123"


async def test_a_redelivered_event_records_nothing_new_and_repeats_its_commands() -> None:
    world = World()
    world.webhooks.hooks = [hook()]
    event = sent()
    first = await world.told(event)
    body = world.log.only().body
    again = await world.told(event)
    assert [cmd.message_id for cmd in again] == [cmd.message_id for cmd in first]
    assert world.log.only().body == body
    # Another event about the same fax is another event id.
    later = await world.told(sent())
    assert later[0].event_id != first[0].event_id


async def test_events_no_webhook_tells_about_are_ignored() -> None:
    world = World()
    world.webhooks.hooks = [hook()]
    note = c.NotificationSent(
        **FAX, kind=c.NotificationKind.sent, recipients=("a@example.com",), smtp_message_id="<x>"
    )
    assert await world.told(note) == []


async def test_a_rejected_submission_tells_each_of_its_faxes() -> None:
    world = World()
    world.webhooks.hooks = [hook()]
    rejected = c.OutboundFaxRejected(
        **FAX,
        user_id="u1",
        faxbox_id="fb1",
        sender_email="alice@example.com",
        destination_raw="+12125550123, +12125550124",
        reasons=(c.RejectionReason(code=c.RejectionCode.unreadable_document, message="Broken."),),
        raw=REF,
        fax_ids=("fax1", "fax1-2"),
    )
    commands = await world.told(rejected)
    assert [cmd.fax_id for cmd in commands] == ["fax1", "fax1-2"]
    bodies = [json.loads(d.body) for d in world.log.deliveries.values()]
    assert {b["data"]["failure_reason"] for b in bodies} == {"document_unreadable"}
    assert {b["type"] for b in bodies} == {"fax.failed"}
    assert all(b["data"]["retryable"] is False for b in bodies)


async def _one(world: World, **hook_fields: Any) -> c.WebhookDeliveryRequested:
    world.webhooks.hooks = [hook(**hook_fields)]
    (command,) = await world.told(sent())
    return command


async def test_a_2xx_delivers() -> None:
    world = World()
    command = await _one(world)
    assert await deliver(command, world.deps()) is Outcome.DELIVERED
    delivery = world.log.only()
    assert delivery.state == "delivered"
    assert [a.status for a in delivery.attempts] == [200]
    url, body, headers = world.sender.posts[0]
    assert url == "https://hooks.example.com/fax"
    assert body == delivery.body.encode()
    assert headers["Faxbox-Event-Id"] == delivery.event_id
    assert headers["Faxbox-Signature"] == "sig-of-acc1"
    assert world.slots.released == 1
    # Delivered: a duplicate command does nothing.
    assert await deliver(command, world.deps()) is Outcome.SKIPPED
    assert len(world.sender.posts) == 1


async def test_failures_follow_the_schedule_then_give_up() -> None:
    world = World()
    command = await _one(world)
    url = "https://hooks.example.com/fax"
    world.sender.answers[url] = [500, 503, None]
    delays = []
    for _ in range(2):
        with pytest.raises(RetryLater) as later:
            await deliver(command, world.deps())
        delays.append(later.value.delay_s)
        world.clock.advance(later.value.delay_s)
    assert delays == [10, 60]
    assert await deliver(command, world.deps()) is Outcome.FAILED
    delivery = world.log.only()
    assert delivery.state == "failed"
    assert [a.status for a in delivery.attempts] == [500, 503, None]
    assert delivery.attempts[-1].error == "connection refused"
    assert delivery.scheduled_attempts == 3


async def test_an_early_duplicate_waits_for_the_schedule() -> None:
    world = World()
    command = await _one(world)
    world.sender.answers["https://hooks.example.com/fax"] = [500]
    with pytest.raises(RetryLater):
        await deliver(command, world.deps())
    with pytest.raises(RetryLater, match="not due yet") as early:
        await deliver(command, world.deps())
    assert early.value.delay_s == 10
    assert len(world.sender.posts) == 1


async def test_the_failover_url_is_tried_at_once() -> None:
    world = World()
    command = await _one(world, failover_url="https://backup.example.com/fax")
    world.sender.answers["https://hooks.example.com/fax"] = [502]
    assert await deliver(command, world.deps()) is Outcome.DELIVERED
    delivery = world.log.only()
    assert [(a.url, a.status, a.failover) for a in delivery.attempts] == [
        ("https://hooks.example.com/fax", 502, False),
        ("https://backup.example.com/fax", 200, True),
    ]


async def test_a_replay_is_one_more_attempt_with_the_same_body() -> None:
    world = World()
    command = await _one(world)
    assert await deliver(command, world.deps()) is Outcome.DELIVERED
    replay = command.model_copy(update={"replay": True, "message_id": "replay1"})
    world.sender.answers["https://hooks.example.com/fax"] = [500]
    assert await deliver(replay, world.deps()) is Outcome.REPLAYED
    delivery = world.log.only()
    assert delivery.state == "delivered"  # a failed replay takes nothing back
    assert [(a.status, a.replay) for a in delivery.attempts] == [(200, False), (500, True)]
    assert world.sender.posts[0][1] == world.sender.posts[1][1]


async def test_all_slots_of_a_url_taken_waits_without_using_the_schedule() -> None:
    world = World()
    command = await _one(world, max_concurrency=2)
    world.slots.capacity_taken["https://hooks.example.com/fax"] = 2
    with pytest.raises(RetryLater, match="2 requests") as busy:
        await deliver(command, world.deps())
    assert busy.value.delay_s == 2
    assert world.log.only().scheduled_attempts == 0
    assert world.sender.posts == []


async def test_a_removed_webhook_or_a_lost_log_entry() -> None:
    world = World()
    command = await _one(world)
    world.webhooks.hooks = []
    assert await deliver(command, world.deps()) is Outcome.SKIPPED
    world.log.deliveries.clear()
    with pytest.raises(PermanentError, match="not in its log"):
        await deliver(command, world.deps())
