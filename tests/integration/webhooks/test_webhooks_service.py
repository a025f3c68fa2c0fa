"""The webhooks service against real RabbitMQ and FerretDB, posting to real HTTP servers.

The service runs in this process through its own wiring; fax events are published on
the test's prefix as the transmitter and inbound receiver publish them; the receivers
are uvicorn servers on loopback (``tests/webhook_receiver.py``), which the platform
setting allows here as it would allow a partner's network. Signatures are checked as
docs/api.md tells receivers to, with the account's public key.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from faxbox.shared import contracts as c
from faxbox.shared.bus import Bus
from faxbox.shared.runner import Runtime
from faxbox.shared.secretbox import SecretBox
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Account, Store
from faxbox.shared.store.signing_keys import SigningKeys
from faxbox.shared.store.webhooks import Webhook, WebhookDelivery, WebhookStore
from faxbox.webhooks.service import Settings, service
from tests.e2e.stack import eventually
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

SECRET = "test-secret-key-for-webhooks-0123456789"


@pytest.fixture(scope="module")
async def account(store: Store) -> Account:
    return await store.create_account(
        Account(name="Hooks", realm=f"hooks-{uuid.uuid4().hex[:6]}.example")
    )


@pytest.fixture
async def bus(broker_settings: BrokerSettings) -> AsyncIterator[Bus]:
    bus = Bus(broker_settings)
    await bus.connect()
    try:
        yield bus
    finally:
        await bus.close()


def settings_for(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        **broker_settings.model_dump(),
        **mongo_settings.model_dump(),
        "secret_key": SECRET,
        "webhooks_allowed_networks": ("127.0.0.0/8",),
        "webhooks_retry_schedule_s": (1, 1, 1),
        "webhooks_http_timeout_s": 5,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
async def running(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, bus: Bus
) -> AsyncIterator[Bus]:
    async with service(Runtime("webhooks"), settings_for(broker_settings, mongo_settings)):
        yield bus


def sent(account: Account, fax_id: str | None = None) -> c.FaxSent:
    ref = c.DocumentRef(
        account_id=account.id,
        month="202611",
        file_id="f1",
        filename="fax.tif",
        content_type="image/tiff",
        length=1,
        sha256="0" * 64,
    )
    return c.FaxSent(
        fax_id=fax_id or f"fax{uuid.uuid4().hex[:8]}",
        account_id=account.id,
        month="202611",
        user_id="usr1",
        faxbox_id="fbx1",
        destination="+12125550123",
        attempts=1,
        carrier_id="car1",
        statistics=c.TransferStatistics(
            pages_transferred=2,
            pages_total=2,
            bit_rate=14400,
            ecm=True,
            x_resolution=8031,
            y_resolution=7700,
            duration_s=30,
        ),
        transmitted_tiff=ref,
    )


async def add_hook(store: Store, account: Account, url: str, **fields: Any) -> Webhook:
    return await WebhookStore(store.db).add(Webhook(account_id=account.id, url=url, **fields))


async def deliveries(store: Store, hook: Webhook) -> list[WebhookDelivery]:
    return await WebhookStore(store.db).recent_deliveries(hook.id)


async def test_a_fax_event_is_posted_once_signed_with_the_accounts_key(
    running: Bus, store: Store, account: Account
) -> None:
    async with WebhookReceiver().running() as receiver:
        hook = await add_hook(store, account, receiver.url("/a"))
        event = sent(account)
        await running.publish(event)
        (request,) = await eventually(lambda: receiver.to("/a"), 20, "the webhook")
        key = await SigningKeys(store.db, SecretBox(SECRET)).public(account.id)
        assert request.verify(key.public_key)
        other = await SigningKeys(store.db, SecretBox(SECRET)).public("acc_someone_else")
        assert not request.verify(other.public_key)
        body = request.event
        assert body["type"] == "fax.delivered"
        assert body["fax_id"] == event.fax_id
        assert body["data"]["status"] == "delivered"
        assert body["data"]["pages_sent"] == 2
        assert request.headers["faxbox-event-id"] == body["id"]
        assert request.headers["content-type"] == "application/json"
        (logged,) = await eventually(
            lambda: _delivered(store, hook), 10, "the delivery logged as delivered"
        )
        assert logged.event_id == body["id"]
        assert [a.status for a in logged.attempts] == [200]
        # The same event again (a redelivery upstream) is the same delivery: nothing new.
        await running.publish(event)
        await asyncio.sleep(1.5)
        assert len(receiver.to("/a")) == 1


async def _delivered(store: Store, hook: Webhook) -> list[WebhookDelivery]:
    return [d for d in await deliveries(store, hook) if d.state == "delivered"]


async def test_500s_are_retried_on_the_schedule_until_taken(
    running: Bus, store: Store, account: Account
) -> None:
    async with WebhookReceiver(statuses={"/b": [500, 503]}).running() as receiver:
        hook = await add_hook(store, account, receiver.url("/b"))
        await running.publish(sent(account))
        await eventually(lambda: _delivered(store, hook), 30, "the third attempt to take it")
        requests = receiver.to("/b")
        assert [r.status for r in requests] == [500, 503, 200]
        assert len({r.body for r in requests}) == 1  # the same body every time
        assert len({r.event["id"] for r in requests}) == 1
        assert requests[1].at - requests[0].at >= 0.9  # the schedule's 1 s, a broker timer
        (logged,) = await deliveries(store, hook)
        assert [a.status for a in logged.attempts] == [500, 503, 200]
        assert logged.scheduled_attempts == 3


async def test_the_failover_url_takes_what_the_url_refuses(
    running: Bus, store: Store, account: Account
) -> None:
    async with WebhookReceiver(statuses={"/primary": [500]}).running() as receiver:
        hook = await add_hook(
            store, account, receiver.url("/primary"), failover_url=receiver.url("/backup")
        )
        await running.publish(sent(account))
        (logged,) = await eventually(lambda: _delivered(store, hook), 20, "the failover")
        assert [(a.failover, a.status) for a in logged.attempts] == [(False, 500), (True, 200)]
        assert len(receiver.to("/backup")) == 1


async def test_a_replay_sends_the_same_event_again_and_receivers_can_tell(
    running: Bus, store: Store, account: Account
) -> None:
    async with WebhookReceiver().running() as receiver:
        hook = await add_hook(store, account, receiver.url("/c"))
        await running.publish(sent(account))
        (logged,) = await eventually(lambda: _delivered(store, hook), 20, "the delivery")
        replay = c.WebhookDeliveryRequested(
            fax_id=logged.fax_id,
            account_id=account.id,
            webhook_id=hook.id,
            event_id=logged.event_id,
            month=logged.month,
            replay=True,
        )
        await running.publish(replay)
        first, again = await eventually(
            lambda: receiver.to("/c") if len(receiver.to("/c")) == 2 else None, 20, "the replay"
        )
        assert first.body == again.body
        assert first.event["id"] == again.event["id"]
        key = await SigningKeys(store.db, SecretBox(SECRET)).public(account.id)
        assert again.verify(key.public_key)
        seen = {r.event["id"] for r in receiver.to("/c")}
        assert len(seen) == 1  # a receiver deduplicating by event id acts once
        (logged,) = await deliveries(store, hook)
        assert [(a.status, a.replay) for a in logged.attempts] == [(200, False), (200, True)]


async def test_requests_to_one_url_stay_within_its_limit(
    running: Bus, store: Store, account: Account
) -> None:
    async with WebhookReceiver(delay_s=0.6).running() as receiver:
        hook = await add_hook(store, account, receiver.url("/d"), max_concurrency=2)
        for _ in range(6):
            await running.publish(sent(account))
        await eventually(
            lambda: len(receiver.to("/d")) == 6, 60, "all six deliveries", interval_s=0.1
        )
        assert receiver.most_open == 2
        delivered = await _delivered(store, hook)
        assert len(delivered) == 6


async def test_loopback_is_refused_unless_the_platform_allows_it(
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    bus: Bus,
    store: Store,
    account: Account,
) -> None:
    strict = settings_for(broker_settings, mongo_settings, webhooks_allowed_networks=())
    async with WebhookReceiver().running() as receiver, service(Runtime("webhooks"), strict):
        # Stored directly: the portal and CLI would have refused it already.
        hook = await add_hook(store, account, receiver.url("/e"))
        await bus.publish(sent(account))

        async def attempted() -> list[WebhookDelivery]:
            return [d for d in await deliveries(store, hook) if d.attempts]

        (logged,) = await eventually(attempted, 20, "the refused attempt")
        error = logged.attempts[0].error or ""
        assert error.startswith("refused:")
        assert "127.0.0.1, a loopback address" in error
        assert logged.attempts[0].status is None
        await asyncio.sleep(1.5)
        assert receiver.received == []
