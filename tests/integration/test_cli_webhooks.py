"""``faxbox webhook ...`` as an operator runs it: a separate process, the real database
and broker."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from faxbox.shared.bus import Bus, EventTap
from faxbox.shared.contracts import WebhookDeliveryRequested
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Store
from faxbox.shared.store.webhooks import WebhookDelivery, WebhookStore

pytestmark = pytest.mark.integration

REALM = f"cli-hooks-{uuid.uuid4().hex[:6]}.example"


@pytest.fixture
def cli(mongo_settings: MongoSettings, broker_settings: BrokerSettings) -> Any:
    env = os.environ | {
        "FAXBOX_MONGO_URL": mongo_settings.mongo_url,
        "FAXBOX_MONGO_DB": mongo_settings.mongo_db,
        "FAXBOX_AMQP_URL": broker_settings.amqp_url,
        "FAXBOX_EXCHANGE_PREFIX": broker_settings.exchange_prefix,
        "FAXBOX_SECRET_KEY": "cli-secret-key-0123456789abcdef-0123",
    }

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "faxbox.admin", "--json", *args],
            env=env | extra,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


async def _in_thread(run: Any, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = await asyncio.to_thread(run, *args, **extra)
    return result


async def test_webhooks_from_the_command_line(
    cli: Any, store: Store, broker_settings: BrokerSettings
) -> None:
    created = await _in_thread(cli, "account", "create", "--name", "Hooks CLI", "--realm", REALM)
    assert created.returncode == 0, created.stderr
    account_id = json.loads(created.stdout)["id"]

    refused = await _in_thread(
        cli, "webhook", "add", "--realm", REALM, "--url", "http://10.9.8.7/x"
    )
    assert refused.returncode == 2
    assert "a private address" in refused.stderr
    assert refused.stderr.count("\n") == 1

    allowed = await _in_thread(
        cli,
        "webhook",
        "add",
        "--realm",
        REALM,
        "--url",
        "http://127.0.0.1:9/cli",
        "--event",
        "fax.failed",
        FAXBOX_WEBHOOKS_ALLOWED_NETWORKS='["127.0.0.0/8"]',
    )
    assert allowed.returncode == 0, allowed.stderr
    hook = json.loads(allowed.stdout)
    assert hook["events"] == ["fax.failed"]
    listed = json.loads((await _in_thread(cli, "webhook", "list", "--realm", REALM)).stdout)
    assert [h["id"] for h in listed] == [hook["id"]]

    key = json.loads((await _in_thread(cli, "webhook", "signing-key", "--realm", REALM)).stdout)
    Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"]))
    assert key["account_id"] == account_id

    delivery = WebhookDelivery(
        event_id="evt_cli1",
        webhook_id=hook["id"],
        account_id=account_id,
        fax_id="fax_cli",
        event_type="fax.failed",
        month="202611",
        body="{}",
    )
    await WebhookStore(store.db).log(hook["id"], "202611").insert_one(delivery.to_doc())
    log = json.loads((await _in_thread(cli, "webhook", "deliveries", "--id", hook["id"])).stdout)
    assert [d["event_id"] for d in log] == ["evt_cli1"]

    bus = Bus(broker_settings)
    await bus.connect()
    try:
        async with EventTap(bus, ("webhook.delivery.requested",)) as tap:
            replay = await _in_thread(
                cli, "webhook", "replay", "--id", hook["id"], "--event", "evt_cli1"
            )
            assert replay.returncode == 0, replay.stderr
            command = await tap.get(10)
    finally:
        await bus.close()
    assert isinstance(command, WebhookDeliveryRequested)
    assert (command.event_id, command.replay) == ("evt_cli1", True)

    removed = await _in_thread(cli, "webhook", "remove", "--id", hook["id"])
    assert removed.returncode == 0
    assert json.loads((await _in_thread(cli, "webhook", "list", "--realm", REALM)).stdout) == []
    assert await WebhookStore(store.db).log_months(hook["id"]) == []
