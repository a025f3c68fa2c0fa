"""Sending survives the broker: a submission or cancel is recorded before it is answered.

Real FerretDB and RabbitMQ. The portal's outbox publishes through a publisher that can be
switched off (the broker failing mid-request, after the record); the record itself can
be made to fail (the database away at that instant). What the portal published is read
back from the events exchange with a tap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pymongo.errors import AutoReconnect

from faxbox.portal.deps import PortalDeps
from faxbox.portal.outbound import SendLimits, submission_message_id
from faxbox.portal.security import TokenScope, TokenStore
from faxbox.shared.bus import Bus, EventTap
from faxbox.shared.contracts import FaxCancelRequested, FaxSubmitted, Message
from faxbox.shared.outbox import Decided, Outbox, Recorded
from faxbox.shared.settings import BrokerSettings
from faxbox.shared.store import Store
from faxbox.shared.store.decisions import MongoDecisionStore
from tests.integration.portal.conftest import client_for, make_deps, portal_outbox
from tests.integration.portal.seed import World

pytestmark = pytest.mark.integration


class SwitchableBroker:
    """The real bus, unless switched off: then every publish fails as a lost connection."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.down = False
        self.refused = 0

    async def publish(self, message: Message) -> None:
        if self.down:
            self.refused += 1
            raise ConnectionError("the broker went away mid-request")
        await self.bus.publish(message)


class DatabaseAwayAtRecord(MongoDecisionStore):
    async def record(self, decided: Decided) -> Recorded:
        raise AutoReconnect("the database went away")


@pytest.fixture
async def bus(broker_settings: BrokerSettings) -> AsyncIterator[Bus]:
    bus = Bus(broker_settings)
    await bus.connect()
    for consumer in ("validator", "transmitter"):  # so the portal's publishes are routed
        await bus.declare_service(consumer)
    try:
        yield bus
    finally:
        await bus.close()


def deps_with(store: Store, http: httpx.AsyncClient, outbox: Outbox) -> PortalDeps:
    return make_deps(
        store,
        TokenStore(store.db),
        http,
        outbox=outbox,
        send_limits=SendLimits(max_upload_bytes=200_000, publish_wait_s=2.0),
    )


async def send_headers(deps: PortalDeps, world: World, key: str) -> dict[str, str]:
    _, secret = await deps.tokens.create(world.a.users[0], "script", TokenScope.SEND)
    return {"Authorization": f"Bearer {secret}", "Idempotency-Key": key}


async def post_fax(
    client: httpx.AsyncClient, headers: dict[str, str], pdf: bytes
) -> httpx.Response:
    return await client.post(
        "/api/v1/faxes",
        headers=headers,
        files={"file": ("contract.pdf", pdf, "application/pdf")},
        data={"to": ["+12125550123"]},
    )


async def test_a_submission_the_broker_did_not_confirm_is_queued_and_swept_out_once(
    bus: Bus, store: Store, http: httpx.AsyncClient, world: World
) -> None:
    broker = SwitchableBroker(bus)
    outbox = portal_outbox(store, broker)
    deps = deps_with(store, http, outbox)
    headers = await send_headers(deps, world, "swept-once")
    async with (
        EventTap(bus, ("fax.outbound.submitted", "fax.outbound.cancel_requested")) as tap,
        client_for(deps) as client,
    ):
        broker.down = True
        created = await post_fax(client, headers, world.pdf)
        assert created.status_code == 202, created.text
        fax_id = created.json()["faxes"][0]["id"]
        shown = (await client.get(f"/api/v1/faxes/{fax_id}", headers=headers)).json()
        assert shown["status"] == "queued"
        cancelled = await client.post(f"/api/v1/faxes/{fax_id}/cancel", headers=headers)
        assert cancelled.status_code == 202, cancelled.text
        assert broker.refused == 2
        with pytest.raises(TimeoutError):
            await tap.get(1)  # nothing went out while the broker was away

        broker.down = False
        assert await outbox.sweep(0) == 2
        swept = [await tap.get(10), await tap.get(10)]
        assert await outbox.sweep(0) == 0  # confirmed: owed no more
        # The same request again: the same fax, recorded already, not published again.
        again = await post_fax(client, headers, world.pdf)
        assert again.status_code == 202
        assert again.json() == created.json()
        with pytest.raises(TimeoutError):
            await tap.get(1)  # exactly once each
    submitted, cancel = sorted(swept, key=lambda m: isinstance(m, FaxCancelRequested))
    assert isinstance(submitted, FaxSubmitted)
    assert (submitted.fax_id, submitted.message_id) == (fax_id, submission_message_id(fax_id))
    assert isinstance(cancel, FaxCancelRequested)
    assert cancel.fax_id == fax_id


async def test_a_submission_that_cannot_be_recorded_is_503_and_nothing_is_queued(
    bus: Bus, store: Store, http: httpx.AsyncClient, world: World
) -> None:
    away = deps_with(
        store, http, Outbox(DatabaseAwayAtRecord(store.db, "portal"), bus, name="portal")
    )
    headers = await send_headers(away, world, "not-recorded")
    submissions_before = await store.db["fax_submissions"].count_documents({})
    async with EventTap(bus, ("fax.outbound.submitted",)) as tap:
        async with client_for(away) as client:
            refused = await post_fax(client, headers, world.pdf)
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "unavailable"
        assert "nothing was queued" in refused.json()["detail"]
        assert await store.db["fax_submissions"].count_documents({}) == submissions_before
        with pytest.raises(TimeoutError):
            await tap.get(1)
        # The key is free again: the retry is a new submission, answered and published.
        async with client_for(deps_with(store, http, portal_outbox(store, bus))) as client:
            retried = await post_fax(client, headers, world.pdf)
        assert retried.status_code == 202, retried.text
        assert "Idempotent-Replayed" not in retried.headers
        published = await tap.get(10)
    assert isinstance(published, FaxSubmitted)
    assert published.fax_id == retried.json()["faxes"][0]["id"]
