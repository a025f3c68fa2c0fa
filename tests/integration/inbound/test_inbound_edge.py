"""Who may call the inbound receiver, over real SIP/UDP against the service in this
process (real RabbitMQ and FerretDB): only the carriers' addresses (403 for anyone
else, counted), at a bounded rate per address (503), and through a digest challenge
for a carrier that has inbound credentials. The callers are our own user agents bound
to other loopback addresses (127.0.0.2, 127.0.0.3): each a different source."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from faxbox.fax.sip.digest import Credentials
from faxbox.fax.sip.ua import CallFailed, UserAgent
from faxbox.inbound.service import Settings, service
from faxbox.shared.looplag import LoopLag
from faxbox.shared.runner import Runtime
from faxbox.shared.secretbox import SecretBox
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Carrier, Store
from tests.integration.transmitter._support import loopback_carrier
from tests.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KEY = "an inbound test key of at least 32 chars"
UNASSIGNED = "+16465550177"  # past the edge, a call to it is answered 404


def refused(reason: str) -> float:
    labels = {"reason": reason}
    return REGISTRY.get_sample_value("faxbox_inbound_invites_refused_total", labels) or 0.0


@pytest.fixture(scope="module")
async def carriers(store: Store) -> None:
    await loopback_carrier(store)  # 127.0.0.1
    trunk = Carrier(
        name="challenged-trunk", sip_allow=["127.0.0.3/32"], inbound_username="trunk-in"
    )
    await store.add_carrier(trunk.with_password("in-s3cret", SecretBox(KEY), "inbound_password"))


@asynccontextmanager
async def receiver(
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    runtime: LoopLag | None = None,
    **settings: object,
) -> AsyncIterator[str]:
    port = free_port(socket.SOCK_DGRAM)
    options = Settings(
        **broker_settings.model_dump(),
        **mongo_settings.model_dump(),
        inbound_sip_port=port,
        inbound_carriers_refresh_s=0.1,
        secret_key=SecretStr(KEY),
        **settings,  # type: ignore[arg-type]
    )
    async with service(Runtime("inbound", runtime), options):
        yield f"sip:127.0.0.1:{port}"


async def status_of(ua: UserAgent, uri: str, credentials: Credentials | None = None) -> int:
    try:
        call = await ua.dial(uri, "+12125550100", UNASSIGNED, credentials=credentials)
    except CallFailed as failed:
        return failed.status
    await call.hangup()
    return 200


async def test_an_invite_from_an_unlisted_address_gets_403_and_is_counted(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, carriers: None
) -> None:
    before = refused("source")
    async with (
        receiver(broker_settings, mongo_settings) as uri,
        await UserAgent.start("127.0.0.2", user="stranger") as stranger,
        await UserAgent.start("127.0.0.1", user="carrier") as carrier,
    ):
        assert await status_of(stranger, uri) == 403
        assert refused("source") == before + 1
        # The carrier's own address gets through to the number lookup.
        assert await status_of(carrier, uri) == 404


async def test_invites_past_the_rate_of_one_address_get_503(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, carriers: None
) -> None:
    before = refused("rate")
    async with (
        receiver(
            broker_settings, mongo_settings, inbound_invites_per_s=0.01, inbound_invite_burst=2
        ) as uri,
        await UserAgent.start("127.0.0.1") as carrier,
    ):
        statuses = [await status_of(carrier, uri) for _ in range(3)]
    assert statuses == [404, 404, 503]
    assert refused("rate") == before + 1


async def test_a_carrier_with_inbound_credentials_must_answer_the_challenge(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, carriers: None
) -> None:
    before = refused("auth")
    async with (
        receiver(broker_settings, mongo_settings) as uri,
        await UserAgent.start("127.0.0.3", user="trunk") as trunk,
    ):
        assert await status_of(trunk, uri) == 401
        assert await status_of(trunk, uri, Credentials("trunk-in", "wrong")) == 401
        assert refused("auth") >= before + 1
        assert await status_of(trunk, uri, Credentials("trunk-in", "in-s3cret")) == 404


async def test_a_registered_carrier_s_proxy_is_one_of_its_addresses(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, store: Store, carriers: None
) -> None:
    # A carrier we register with sends our calls from its registrar or the proxy in front
    # of it (Kamailio in tests/interop), over the connection we registered on: with no
    # sip_allow, the outbound proxy's address is let in as well as sip_host's.
    await store.add_carrier(
        Carrier(
            name="proxied-trunk",
            sip_host="127.0.0.5",
            outbound_proxy="sip:127.0.0.4:5060;lr;transport=tcp",
            sip_register=False,
        )
    )
    async with (
        receiver(broker_settings, mongo_settings) as uri,
        await UserAgent.start("127.0.0.4", transports=("TCP",), user="proxy") as proxy,
        await UserAgent.start("127.0.0.2", transports=("TCP",), user="stranger") as stranger,
    ):
        assert await status_of(proxy, f"{uri};transport=tcp") == 404
        assert await status_of(stranger, f"{uri};transport=tcp") == 403


async def test_while_the_loop_runs_late_new_calls_get_503_with_retry_after(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, carriers: None
) -> None:
    # The receiver runs in this process, with its loop-lag monitor: blocking this loop
    # is the process under test falling behind, exactly as a saturated one does.
    lag = LoopLag(bound_ms=250, interval_s=0.02, hold_s=1.5)
    before = refused("overload")
    async with (
        lag.running(),
        receiver(broker_settings, mongo_settings, overload_retry_after_s=12, runtime=lag) as uri,
        await UserAgent.start("127.0.0.1", user="carrier") as carrier,
    ):
        assert await status_of(carrier, uri) == 404  # on time: past the edge
        time.sleep(0.6)  # noqa: ASYNC251 - a loop stalled by work it cannot keep up with
        with pytest.raises(CallFailed) as failed:
            await carrier.dial(uri, "+12125550100", UNASSIGNED)
        assert (failed.value.status, failed.value.retry_after) == (503, 12)
        assert refused("overload") == before + 1
        await asyncio.sleep(2.0)  # the hold is over: calls come in again
        assert await status_of(carrier, uri) == 404
    assert lag.max_lag_ms > 500
