"""A carrier's SIP password stored sealed and opened by the transmitter: a fax through
pstn-sim (in this process) acting as a trunk that challenges every INVITE, with real
RabbitMQ and FerretDB; the transmitter runs through its own wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from faxbox.pstn_sim.service import running
from faxbox.pstn_sim.settings import PstnSettings
from faxbox.shared.bus import Bus
from faxbox.shared.contracts import FaxSent
from faxbox.shared.runner import Runtime
from faxbox.shared.secretbox import SecretBox
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Carrier, Store
from faxbox.transmitter import service as transmitter_service
from faxbox.transmitter.carriers import COLLECTION as SLOTS
from tests.integration.sip._pages import save_fax_tiff, text_page
from tests.integration.transmitter._support import EventLog, fax_request, seed_faxbox

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PACE = 10.0
KEY = "the transmitter test's key, 32+ characters"
RECEIVER = "+12125550100"  # the simulator's default: a fax machine that receives


async def test_a_sealed_password_answers_the_trunks_challenge(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, store: Store, tmp_path: Path
) -> None:
    document = save_fax_tiff(tmp_path / "one.tif", [text_page(1)])
    sim_settings = PstnSettings(
        pstn_sim_sip_port=0,
        pstn_sim_http_port=0,
        pstn_sim_pace=PACE,
        pstn_sim_data_dir=tmp_path / "pstn",
        pstn_sim_auth_username="trunk",
        pstn_sim_auth_password="trunk-s3cret",
    )
    async with running(sim_settings) as sim:
        await store.carriers.delete_many({})
        await store.db[SLOTS].delete_many({})
        assert sim.ua is not None
        carrier = Carrier(
            name="challenging-trunk",
            flags=["fax"],
            sip_host="127.0.0.1",
            sip_port=sim.ua.port,
            sip_username="trunk",
        ).with_password("trunk-s3cret", SecretBox(KEY))
        await store.add_carrier(carrier)
        stored = await store.carriers.find_one({"_id": carrier.id})
        assert stored is not None
        assert "trunk-s3cret" not in str(stored)

        bus = Bus(broker_settings)
        await bus.connect()
        events = EventLog(bus)
        await events.start()
        settings = transmitter_service.Settings(
            **broker_settings.model_dump(),
            **mongo_settings.model_dump(),
            transmitter_line_pace=PACE,
            secret_key=SecretStr(KEY),
        )
        try:
            async with transmitter_service.service(Runtime("transmitter"), settings):
                faxbox = await seed_faxbox(store, "sealed.example.com")
                request = await fax_request(store, faxbox, document, RECEIVER, pages=1)
                await bus.publish(request)
                (sent,) = await events.wait_for(FaxSent, request.fax_id, within_s=90)
                assert sent.statistics.pages_transferred == 1
        finally:
            await bus.close()
        statuses = [r.sip_status for r in sim.calls.all()]
        assert statuses[-1] == 200, statuses  # challenged (401), then answered
