"""Webhooks through the portal's API: the SSRF guard on every URL saved, who may manage
them, the account's signing key, the delivery log and replays (published for the
webhooks service, read back from the events exchange)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from faxbox.portal.deps import PortalDeps
from faxbox.portal.security import TokenScope, TokenStore
from faxbox.shared.bus import Bus, EventTap
from faxbox.shared.contracts import WebhookDeliveryRequested
from faxbox.shared.secretbox import SecretBox, is_sealed
from faxbox.shared.settings import BrokerSettings
from faxbox.shared.store import Store
from faxbox.shared.store.signing_keys import SigningKeys
from faxbox.shared.store.webhooks import DeliveryAttempt, WebhookDelivery, WebhookStore
from faxbox.shared.urlguard import parse_networks
from tests.integration.portal.conftest import client_for, make_deps, portal_outbox
from tests.integration.portal.seed import World

pytestmark = pytest.mark.integration

SECRET = "portal-test-secret-0123456789abcdef"


@pytest.fixture
async def bus(broker_settings: BrokerSettings) -> AsyncIterator[Bus]:
    bus = Bus(broker_settings)
    await bus.connect()
    await bus.declare_service("webhooks")
    try:
        yield bus
    finally:
        await bus.close()


def hooks_deps(
    store: Store, http: httpx.AsyncClient, bus: Bus | None, *networks: str
) -> PortalDeps:
    return make_deps(
        store,
        TokenStore(store.db),
        http,
        outbox=None if bus is None else portal_outbox(store, bus),
        signing_keys=SigningKeys(store.db, SecretBox(SECRET)),
        webhook_networks=parse_networks(list(networks)),
    )


async def bearer(deps: PortalDeps, user_id: str, scope: str) -> dict[str, str]:
    user = await deps.store.get_user(user_id)
    _, secret = await deps.tokens.create(user, "script", TokenScope(scope))
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8080/hook", "a loopback address"),
        ("http://localhost/hook", "a loopback address"),
        ("http://10.0.0.5/hook", "a private address"),
        ("http://192.168.1.1/hook", "a private address"),
        ("http://169.254.169.254/latest/meta-data/", "a link-local address"),
        ("http://[::1]/hook", "a loopback address"),
        ("http://[::ffff:10.0.0.1]/hook", "a private address"),
        ("ftp://93.184.216.34/hook", "starts with https://"),
        ("https://user:pw@93.184.216.34/hook", "user name or password"),
    ],
)
async def test_urls_into_the_platform_are_refused(
    store: Store, http: httpx.AsyncClient, world: World, url: str, why: str
) -> None:
    deps = hooks_deps(store, http, None)
    account = world.a.account.id
    async with client_for(deps) as client:
        response = await client.post(
            f"/api/v1/accounts/{account}/webhooks",
            headers=await bearer(deps, world.a.admin.id, "admin"),
            json={"url": url},
        )
        assert response.status_code == 422, response.text
        assert why in response.json()["detail"]
        # The failover URL is held to the same rule.
        failover = await client.post(
            f"/api/v1/accounts/{account}/webhooks",
            headers=await bearer(deps, world.a.admin.id, "admin"),
            json={"url": "https://93.184.216.34/hook", "failover_url": url},
        )
        assert failover.status_code == 422
    assert await WebhookStore(store.db).of_account(account) == []


async def test_a_public_url_is_kept_and_the_platform_may_allow_a_network(
    store: Store, http: httpx.AsyncClient, world: World
) -> None:
    account = world.b.account.id
    strict = hooks_deps(store, http, None)
    allowing = hooks_deps(store, http, None, "127.0.0.0/8")
    headers = await bearer(strict, world.b.admin.id, "admin")
    async with client_for(strict) as client:
        public = await client.post(
            f"/api/v1/accounts/{account}/webhooks",
            headers=headers,
            json={
                "url": "https://93.184.216.34/faxbox",
                "events": ["fax.failed", "fax.delivered"],
                "max_concurrency": 2,
            },
        )
        assert public.status_code == 201, public.text
        hook = public.json()
        assert hook["events"] == ["fax.delivered", "fax.failed"]
        assert hook["max_concurrency"] == 2
    async with client_for(allowing) as client:
        local = await client.post(
            f"/api/v1/accounts/{account}/webhooks",
            headers=headers,
            json={"url": "http://127.0.0.1:9/hook"},
        )
        assert local.status_code == 201
        listed = await client.get(f"/api/v1/accounts/{account}/webhooks", headers=headers)
        assert {h["url"] for h in listed.json()} == {
            "https://93.184.216.34/faxbox",
            "http://127.0.0.1:9/hook",
        }
        off = await client.patch(
            f"/api/v1/webhooks/{hook['id']}", headers=headers, json={"enabled": False}
        )
        assert off.json()["enabled"] is False
        gone = await client.delete(f"/api/v1/webhooks/{hook['id']}", headers=headers)
        assert gone.status_code == 204
        assert (
            await client.get(f"/api/v1/webhooks/{hook['id']}", headers=headers)
        ).status_code == 404


async def test_only_admins_of_the_account_manage_its_webhooks(
    store: Store, http: httpx.AsyncClient, world: World
) -> None:
    deps = hooks_deps(store, http, None)
    account = world.a.account.id
    async with client_for(deps) as client:
        user = await bearer(deps, world.a.users[0].id, "admin")
        assert (
            await client.get(f"/api/v1/accounts/{account}/webhooks", headers=user)
        ).status_code == 403
        stranger = await bearer(deps, world.b.admin.id, "admin")
        assert (
            await client.get(f"/api/v1/accounts/{account}/webhooks", headers=stranger)
        ).status_code == 404
        reader = await bearer(deps, world.a.admin.id, "read")
        refused = await client.post(
            f"/api/v1/accounts/{account}/webhooks",
            headers=reader,
            json={"url": "https://93.184.216.34/x"},
        )
        assert refused.status_code == 403


async def test_the_signing_key_is_one_per_account_and_verifies_signatures(
    store: Store, http: httpx.AsyncClient, world: World
) -> None:
    deps = hooks_deps(store, http, None)
    async with client_for(deps) as client:
        headers = await bearer(deps, world.a.admin.id, "read")
        url = f"/api/v1/accounts/{world.a.account.id}/webhook-signing-key"
        first, again = (
            (await client.get(url, headers=headers)).json(),
            (await client.get(url, headers=headers)).json(),
        )
        assert first == again
        assert first["algorithm"] == "ed25519"
        other = await client.get(
            f"/api/v1/accounts/{world.b.account.id}/webhook-signing-key",
            headers=await bearer(deps, world.b.admin.id, "read"),
        )
        assert other.json()["public_key"] != first["public_key"]
    pem = load_pem_public_key(first["pem"].encode())
    assert isinstance(pem, Ed25519PublicKey)
    raw = Ed25519PublicKey.from_public_bytes(base64.b64decode(first["public_key"]))
    # What the webhooks service signs with is the key the portal shows.
    private = await SigningKeys(store.db, SecretBox(SECRET)).private(world.a.account.id)
    signature = private.sign(b"1767225600.{}")
    raw.verify(signature, b"1767225600.{}")
    pem.verify(signature, b"1767225600.{}")
    sealed = await store.db["webhook_signing_keys"].find_one({"_id": world.a.account.id})
    assert sealed is not None
    assert is_sealed(str(sealed["private_key_sealed"]))


async def test_the_delivery_log_and_a_replay(
    store: Store, http: httpx.AsyncClient, world: World, bus: Bus
) -> None:
    deps = hooks_deps(store, http, bus, "127.0.0.0/8")
    headers = await bearer(deps, world.a.admin.id, "admin")
    async with client_for(deps) as client:
        created = await client.post(
            f"/api/v1/accounts/{world.a.account.id}/webhooks",
            headers=headers,
            json={"url": "http://127.0.0.1:9/hook"},
        )
        hook_id = created.json()["id"]
        webhooks = WebhookStore(store.db)
        delivery = WebhookDelivery(
            event_id="evt_logged1",
            webhook_id=hook_id,
            account_id=world.a.account.id,
            fax_id="fax_logged",
            event_type="fax.delivered",
            month="202611",
            body='{"id":"evt_logged1"}',
            state="failed",
            scheduled_attempts=8,
            attempts=[
                DeliveryAttempt(
                    at=world.now, url="http://127.0.0.1:9/hook", error="refused", duration_ms=1
                )
            ],
        )
        await webhooks.log(hook_id, "202611").insert_one(delivery.to_doc())
        log = (await client.get(f"/api/v1/webhooks/{hook_id}/deliveries", headers=headers)).json()
        assert [(d["event_id"], d["state"], len(d["attempts"])) for d in log] == [
            ("evt_logged1", "failed", 1)
        ]
        async with EventTap(bus, ("webhook.delivery.requested",)) as tap:
            replayed = await client.post(
                f"/api/v1/webhooks/{hook_id}/deliveries/evt_logged1/replay", headers=headers
            )
            assert replayed.status_code == 202
            command = await tap.get(10)
        assert isinstance(command, WebhookDeliveryRequested)
        assert (command.webhook_id, command.event_id, command.month, command.replay) == (
            hook_id,
            "evt_logged1",
            "202611",
            True,
        )
        missing = await client.post(
            f"/api/v1/webhooks/{hook_id}/deliveries/evt_nothing/replay", headers=headers
        )
        assert missing.status_code == 404
