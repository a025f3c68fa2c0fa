"""The queue dashboard against the real RabbitMQ management API, and re-driving dead
letters through the real Bus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from faxbox.portal.deps import PortalDeps
from faxbox.portal.security import TokenStore
from faxbox.shared.bus import Bus, PermanentError
from faxbox.shared.contracts import MailReceived
from faxbox.shared.runner import Runtime, serve_http
from faxbox.shared.settings import BrokerSettings
from faxbox.shared.store import Store
from faxbox.shared.store.registrations import COLLECTION as REGISTRATIONS
from faxbox.shared.store.registrations import (
    SipRegistrationRecord,
    SipRegistrations,
    record_id,
)
from tests.integration.portal.conftest import client_for, make_deps, sign_in
from tests.integration.portal.seed import World
from tests.support import RabbitServer
from tests.support import sample_mail_received as mail

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(broker_settings: BrokerSettings) -> AsyncIterator[Bus]:
    bus = Bus(broker_settings)
    await bus.connect()
    await bus.declare_service("validator")
    try:
        yield bus
    finally:
        await bus.close()


@pytest.fixture
async def health_endpoint() -> AsyncIterator[str]:
    runtime = Runtime("validator")
    runtime.ready = True
    server = await serve_http(runtime, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{runtime.http_port}/readyz"
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def dashboard_deps(
    store: Store,
    http: httpx.AsyncClient,
    rabbit: RabbitServer,
    vhost: str,
    bus: Bus,
    health_endpoint: str,
    world: World,
) -> PortalDeps:
    tokens = TokenStore(store.db)
    await tokens.ensure_indexes()
    return make_deps(
        store,
        tokens,
        http,
        rabbit,
        vhost,
        redriver=bus,
        topology=bus.topology,
        health_urls={"validator": health_endpoint, "notifier": "http://127.0.0.1:9/readyz"},
    )


async def _dead_letter_one(bus: Bus) -> None:
    async def refuse(message: MailReceived) -> None:
        raise PermanentError("template missing")

    dlq = bus.topology.dead_letter_queue("validator")
    before = await _depth(bus, dlq)
    consumer = bus.consumer("validator", {MailReceived: refuse})
    await consumer.start()
    await bus.publish(mail(1))
    try:
        deadline = time.monotonic() + 15
        while await _depth(bus, dlq) < before + 1:
            assert time.monotonic() < deadline, "never dead-lettered"
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop(grace_s=5)


async def _depth(bus: Bus, name: str) -> int:
    channel = await bus.connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return queue.declaration_result.message_count or 0
    finally:
        await channel.close()


async def _board_until(
    client: httpx.AsyncClient, ready: object, timeout_s: float = 30
) -> dict[str, object]:
    # The management plugin refreshes queue figures every few seconds.
    deadline = time.monotonic() + timeout_s
    while True:
        board: dict[str, object] = (await client.get("/api/dashboard")).json()
        if ready(board):  # type: ignore[operator]
            return board
        assert time.monotonic() < deadline, board
        await asyncio.sleep(0.5)


def _row(board: dict[str, object], service: str) -> dict[str, object]:
    rows = board["queues"]
    assert isinstance(rows, list)
    return next(r for r in rows if r["service"] == service)


async def test_dashboard_shows_queues_health_and_redrives(
    dashboard_deps: PortalDeps, bus: Bus, world: World
) -> None:
    await _dead_letter_one(bus)
    await bus.publish(mail(2))
    await bus.publish(mail(3))
    async with client_for(dashboard_deps) as client:
        await sign_in(client, world.platform.email)
        board = await _board_until(
            client,
            lambda b: (
                _row(b, "validator")["depth"] == 2
                and _row(b, "validator")["dead_letter_depth"] == 1
            ),
        )
        validator = _row(board, "validator")
        assert validator["declared"] is True
        assert validator["queue"] == bus.topology.queue("validator")
        assert validator["consumers"] == 0
        assert isinstance(validator["publish_rate"], float)
        assert _row(board, "transmitter")["declared"] is False
        assert board["queue_error"] is None
        health = {h["service"]: h["healthy"] for h in board["health"]}  # type: ignore[attr-defined]
        assert health == {"validator": True, "notifier": False}

        html = await client.get("/dashboard")
        assert html.status_code == 200
        assert "Re-drive" in html.text
        # The page asks first; nothing moves without the confirmation.
        ask = await client.post(
            "/dashboard/redrive/validator", data={"csrf_token": client.headers["X-CSRF-Token"]}
        )
        assert ask.status_code == 200
        assert "Yes, re-drive" in ask.text
        url = "/api/dashboard/queues/validator/redrive"
        assert (await client.post(url, json={"confirm": False})).status_code == 422
        assert (
            await client.post(url.replace("validator", "nobody"), json={"confirm": True})
        ).status_code == 404
        moved = await client.post(url, json={"confirm": True})
        assert moved.status_code == 200, moved.text
        assert moved.json() == {"service": "validator", "moved": 1}
        await _board_until(
            client,
            lambda b: (
                _row(b, "validator")["depth"] == 3
                and _row(b, "validator")["dead_letter_depth"] == 0
            ),
        )
        again = await client.post(
            "/dashboard/redrive/validator",
            data={"csrf_token": client.headers["X-CSRF-Token"], "confirm": "yes"},
        )
        assert again.status_code == 303
        assert "Re-drove+0" in again.headers["location"]


async def test_redrive_moves_at_most_the_count_asked_for(
    dashboard_deps: PortalDeps, bus: Bus, world: World
) -> None:
    for _ in range(3):
        await _dead_letter_one(bus)
    dlq = bus.topology.dead_letter_queue("validator")
    async with client_for(dashboard_deps) as client:
        await sign_in(client, world.platform.email)
        url = "/api/dashboard/queues/validator/redrive"
        assert (await client.post(url, json={"confirm": True, "count": 0})).status_code == 422
        moved = await client.post(url, json={"confirm": True, "count": 2})
        assert moved.json() == {"service": "validator", "moved": 2}
        assert await _depth(bus, dlq) == 1
        form = await client.post(
            "/dashboard/redrive/validator",
            data={"csrf_token": client.headers["X-CSRF-Token"], "confirm": "yes", "count": "5"},
        )
        assert "Re-drove+1" in form.headers["location"]


async def test_dashboard_is_for_platform_admins_only(
    dashboard_deps: PortalDeps, world: World
) -> None:
    async with client_for(dashboard_deps) as client:
        # A reseller sees its own accounts, never the platform's queues.
        for email in (world.reseller.admin.email, world.a.admin.email, world.a.users[0].email):
            await sign_in(client, email)
            assert (await client.get("/api/dashboard")).status_code == 403
            url = "/api/dashboard/queues/validator/redrive"
            assert (await client.post(url, json={"confirm": True})).status_code == 403
            assert (await client.get("/dashboard")).status_code == 403


async def test_management_api_down_is_reported_not_raised(
    store: Store, http: httpx.AsyncClient, world: World
) -> None:
    deps = make_deps(store, TokenStore(store.db), http)  # points at a closed port
    async with client_for(deps) as client:
        await sign_in(client, world.platform.email)
        board = (await client.get("/api/dashboard")).json()
        assert board["queues"] == []
        assert "unreachable" in board["queue_error"]


async def test_dashboard_shows_the_sip_registrations(
    dashboard_deps: PortalDeps, store: Store, world: World
) -> None:
    board_store = SipRegistrations(store.db[REGISTRATIONS])
    await store.db[REGISTRATIONS].delete_many({})
    now = datetime.now(UTC).replace(microsecond=0)
    for instance, state, expires in (("rx-1", "registered", 300), ("rx-2", "failed", None)):
        await board_store.record(
            SipRegistrationRecord(
                id=record_id("car_voip", instance),
                carrier_id="car_voip",
                carrier_name="voip",
                instance=instance,
                aor="sip:5551234@carrier.example",
                registrar="sip:carrier.example;transport=tls",
                state=state,
                expires_at=now + timedelta(seconds=expires) if expires else None,
                last_status=200 if expires else 403,
                last_reason="OK" if expires else "Forbidden",
                failures=0 if expires else 2,
                updated_at=now,
            )
        )
    async with client_for(dashboard_deps) as client:
        await sign_in(client, world.platform.email)
        board = (await client.get("/api/dashboard")).json()
        rows = {r["instance"]: r for r in board["registrations"]}
        assert rows["rx-1"]["state"] == "registered"
        assert 0 < rows["rx-1"]["expires_in_s"] <= 300
        assert (rows["rx-2"]["state"], rows["rx-2"]["last_status"]) == ("failed", 403)
        html = (await client.get("/dashboard")).text
        assert "SIP registrations" in html
        assert "sip:5551234@carrier.example" in html
        assert "403 Forbidden" in html
    await store.db[REGISTRATIONS].delete_many({})
