"""The transmitter, inbound receiver and history writer, as configured by carrier
documents, against Kamailio (a registrar/SBC nobody here wrote), SIPp and pstn-sim.

- the inbound receiver registers (over TCP) with the carrier flagged ``sip_register``:
  the registration shows in ``/metrics`` and in the ``sip_registrations`` collection the
  portal's dashboard reads; pstn-sim calls one of our DIDs through Kamailio, which
  delivers it to our registered contact (the DID only in To), and the fax is received;
  stopping the receiver de-registers;
- the transmitter reaches pstn-sim through Kamailio over TLS (certificate verified
  against the test's CA, digest credentials, Kamailio's domain in From);
- failover: a fax whose route carries the ``failover`` flag may use the carrier that
  requires it (SIPp, answering 503 with Retry-After) before the Kamailio carrier; the
  503 hands the call to Kamailio within the same attempt, the fax is sent, and the
  history's timeline shows both carriers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from faxbox.fax.sip.settings import SipSettings
from faxbox.history.service import Settings as HistorySettings
from faxbox.history.service import service as history_service
from faxbox.inbound.service import Settings as InboundSettings
from faxbox.inbound.service import service as inbound_service
from faxbox.pstn_sim.service import RunningSimulator, running
from faxbox.pstn_sim.settings import PstnSettings
from faxbox.shared.bus import Bus, EventTap
from faxbox.shared.contracts import FaxAttemptFailed, FaxSent, InboundFaxReceived
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Carrier, Faxbox, HistoryRecord, Store
from faxbox.shared.store.registrations import COLLECTION as REGISTRATIONS
from faxbox.shared.store.registrations import SipRegistrations
from faxbox.transmitter.carriers import COLLECTION as SLOTS
from faxbox.transmitter.service import Settings as TransmitterSettings
from faxbox.transmitter.service import service as transmitter_service
from tests.integration.sip._pages import assert_pages_identical, save_fax_tiff, text_page
from tests.integration.transmitter._support import (
    EventLog,
    eventually,
    fax_request,
    give_number,
    seed_faxbox,
)
from tests.peers.kamailio import Kamailio, running_kamailio
from tests.peers.sipp import reply, scenario, start_sipp

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PACE = 10.0
USER, PASSWORD = "faxbox", "kamailio-service-secret"
OUR_DID = "+16465550140"
RECEIVE = "+12125550101"
CALLER = "+12125550100"


@pytest.fixture(scope="module")
def three_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fax_tiff(
        tmp_path_factory.mktemp("doc") / "three.tif", [text_page(n) for n in (1, 2, 3)]
    )


@pytest.fixture(scope="module")
async def sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSimulator]:
    settings = PstnSettings(
        pstn_sim_sip_port=0,
        pstn_sim_http_port=0,
        pstn_sim_pace=PACE,
        pstn_sim_data_dir=tmp_path_factory.mktemp("pstn-sim"),
        pstn_sim_answer_timeout_s=20,
    )
    async with running(settings) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory, sim: RunningSimulator) -> Iterator[Kamailio]:
    assert sim.ua is not None
    with running_kamailio(
        tmp_path_factory.mktemp("kamailio"), pstn=sim.ua.address, users={USER: PASSWORD}
    ) as k:
        yield k


@pytest.fixture(scope="module")
async def faxbox(store: Store) -> Faxbox:
    box = await seed_faxbox(store, "kamailio.example.com", identity="KAMAILIO RX")
    await give_number(store, box, OUR_DID)
    return box


def sip_settings(kamailio: Kamailio) -> SipSettings:
    return SipSettings(tls_ca_file=kamailio.certificates.ca_file)


def kamailio_carrier(kamailio: Kamailio, transport: str, **changes: object) -> Carrier:
    return Carrier.model_validate(
        {
            "name": f"kamailio-{transport}",
            "flags": ["fax"],
            "priority": 5,
            "channel_cap": 4,
            "sip_host": "127.0.0.1",
            "sip_port": kamailio.tls_port if transport == "tls" else kamailio.port,
            "sip_transport": transport,
            "sip_domain": kamailio.domain,
            "sip_username": USER,
            "sip_password": PASSWORD,
            **changes,
        }
    )


@pytest.fixture
async def clean(store: Store) -> None:
    await store.carriers.delete_many({})
    await store.db[SLOTS].delete_many({})
    await store.db[REGISTRATIONS].delete_many({})


class Tapped(EventLog):
    """Every event, from a private tap (the history writer consumes the history queue)."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self._task: asyncio.Task[None] | None = None

    async def collect(self, tap: EventTap) -> None:
        while True:
            self.events.append(await tap.get(3600))


@pytest.fixture
async def events(broker_settings: BrokerSettings) -> AsyncIterator[EventLog]:
    bus = Bus(broker_settings)
    await bus.connect()
    log = Tapped(bus)
    async with EventTap(bus) as tap:
        task = asyncio.create_task(log.collect(tap))
        yield log
        task.cancel()
    await bus.close()


def registered_gauge(carrier: str) -> float | None:
    return REGISTRY.get_sample_value("faxbox_inbound_sip_registered", {"carrier": carrier})


async def test_inbound_registers_and_receives_on_its_contact(
    clean: None,
    store: Store,
    faxbox: Faxbox,
    kamailio: Kamailio,
    sim: RunningSimulator,
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    events: EventLog,
    three_pages: Path,
) -> None:
    carrier = await store.add_carrier(
        kamailio_carrier(kamailio, "tcp", sip_register=True, register_expires_s=60)
    )
    board = SipRegistrations(store.db[REGISTRATIONS])
    settings = InboundSettings(
        **broker_settings.model_dump(),
        **mongo_settings.model_dump(),
        inbound_sip_port=0,
        inbound_sip=sip_settings(kamailio),
        inbound_instance="rx-1",
        inbound_line_pace=PACE,
    )
    async with inbound_service(Runtime("inbound"), settings):

        async def registered() -> bool:
            rows = await board.all()
            return len(rows) == 1 and rows[0].state == "registered"

        await eventually(registered, 15, "registration with Kamailio")
        [row] = await board.all()
        assert (row.carrier_id, row.instance) == (carrier.id, "rx-1")
        assert row.aor == f"sip:{USER}@{kamailio.domain}"
        assert ";transport=tcp" in row.contact
        assert registered_gauge(carrier.name) == 1

        call = sim.originate(CALLER, OUR_DID, three_pages, media="t38", uri=kamailio.network_uri)
        received = await events.wait_for(InboundFaxReceived, within_s=60)
        [event] = received
        assert event.called_number == OUR_DID  # found in To: the Request-URI was our contact
        assert event.faxbox_id == faxbox.id
        assert event.statistics.pages_transferred == 3
        done = await asyncio.wait_for(sim.calls.wait(call.id), 30)
        assert done.outcome is not None
        assert done.outcome.success
        tiff = await store.documents.get(event.tiff)
        path = three_pages.parent / "received-via-kamailio.tif"
        await asyncio.to_thread(path.write_bytes, tiff)
        assert_pages_identical(three_pages, path)
    [row] = await board.all()
    assert row.state == "unregistered"
    assert registered_gauge(carrier.name) == 0


@pytest.fixture
async def transmitter(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, kamailio: Kamailio
) -> AsyncIterator[None]:
    settings = TransmitterSettings(
        **(broker_settings.model_dump() | {"prefetch": 8}),
        **mongo_settings.model_dump(),
        transmitter_line_pace=PACE,
        transmitter_max_calls=4,
        transmitter_answer_timeout_s=20,
        transmitter_lease_s=5,
        transmitter_sip=sip_settings(kamailio),
    )
    async with transmitter_service(Runtime("transmitter"), settings):
        yield


@pytest.fixture
async def history(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings
) -> AsyncIterator[None]:
    settings = HistorySettings(**broker_settings.model_dump(), **mongo_settings.model_dump())
    async with history_service(Runtime("history"), settings):
        yield


async def test_transmitter_over_tls_and_failover_from_a_503_carrier(
    clean: None,
    store: Store,
    faxbox: Faxbox,
    kamailio: Kamailio,
    sim: RunningSimulator,
    transmitter: None,
    history: None,
    events: EventLog,
    three_pages: Path,
    tmp_path: Path,
    broker_settings: BrokerSettings,
) -> None:
    tls = await store.add_carrier(kamailio_carrier(kamailio, "tls"))
    sipp = await start_sipp(
        tmp_path,
        scenario(
            "a carrier in trouble",
            '<recv request="INVITE"/>'
            + reply("503 Service Unavailable", extra="Retry-After: 60")
            + '<recv request="ACK"/>',
        ),
    )
    troubled = await store.add_carrier(
        Carrier(
            name="sipp-503",
            flags=["fax"],
            require_flags=["failover"],
            priority=1,
            channel_cap=2,
            sip_host="127.0.0.1",
            sip_port=sipp.port,
        )
    )
    bus = Bus(broker_settings)
    await bus.connect()
    try:
        plain = await fax_request(store, faxbox, three_pages, RECEIVE, pages=3)
        await bus.publish(plain)
        [sent] = await events.wait_for(FaxSent, plain.fax_id, within_s=60)
        assert sent.carrier_id == tls.id  # no flag: the 503 carrier was never eligible
        assert not events.of(FaxAttemptFailed, plain.fax_id)

        flagged = await fax_request(
            store, faxbox, three_pages, RECEIVE, pages=3, route_flags=("failover",)
        )
        await bus.publish(flagged)
        [sent] = await events.wait_for(FaxSent, flagged.fax_id, within_s=60)
    finally:
        await bus.close()
    await sipp.assert_passed()
    assert (sent.carrier_id, sent.attempts) == (tls.id, 1)
    [tried] = events.of(FaxAttemptFailed, flagged.fax_id)
    assert tried.carrier_failover
    assert (tried.carrier_id, tried.attempt, tried.failure.sip_status) == (troubled.id, 1, 503)

    async def timeline() -> HistoryRecord | None:
        doc = await store.history.collection(flagged.account_id, flagged.month).find_one(
            {"_id": flagged.fax_id}
        )
        record = HistoryRecord.model_validate(doc) if doc else None
        return record if record is not None and record.status == "sent" else None

    record = None

    async def found() -> bool:
        nonlocal record
        record = await timeline()
        return record is not None and len(record.timeline) >= 3

    await eventually(found, 20, "the history of the failed-over fax")
    assert record is not None
    summaries = [entry.summary for entry in record.timeline]
    assert any(f"failed on carrier {troubled.id}" in s and "next carrier" in s for s in summaries)
    assert any(s.startswith("sent: 3 of 3") for s in summaries)
