"""A fax that comes in while the database is down is refused and tried again, or kept
and delivered after the outage: never lost.

Everything is real: the inbound receiver (its own wiring, in this process) on a FerretDB
of the test's own that the test stops and starts, the shared RabbitMQ in a fresh
vhost, and pstn-sim placing the calls over SIP with its carrier's redial.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from faxbox.inbound.service import Settings, service
from faxbox.pstn_sim.records import CallRecord
from faxbox.pstn_sim.service import RunningSimulator, running
from faxbox.pstn_sim.settings import PstnSettings
from faxbox.shared.bus import Bus
from faxbox.shared.contracts import InboundFaxReceived
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Faxbox, Store
from tests.ferretdb import PrivateFerretDB
from tests.integration.sip._pages import assert_pages_identical, save_fax_tiff, text_page
from tests.integration.transmitter._support import (
    EventLog,
    eventually,
    give_number,
    loopback_carrier,
    seed_faxbox,
)
from tests.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PACE = 10.0
NUMBER = "+16465550111"


@dataclass
class Rig:
    ferret: PrivateFerretDB
    store: Store
    faxbox: Faxbox
    sim: RunningSimulator
    events: EventLog
    spool: Path

    def pending(self) -> list[Path]:
        directory = self.spool / "pending"
        return sorted(directory.iterdir()) if directory.is_dir() else []


@pytest.fixture
def three_pages(tmp_path: Path) -> Path:
    return save_fax_tiff(tmp_path / "three.tif", [text_page(n) for n in (1, 2, 3)])


@pytest.fixture
async def rig(broker_settings: BrokerSettings, tmp_path: Path) -> AsyncIterator[Rig]:
    ferret = PrivateFerretDB(tmp_path / "ferretdb")
    ferret.start()
    mongo = MongoSettings(mongo_url=ferret.url, mongo_db=f"test_{uuid.uuid4().hex[:8]}")
    store = await Store.connect(mongo)
    bus = Bus(broker_settings)
    try:
        await store.ensure_indexes()
        faxbox = await seed_faxbox(store, "outage.example.com", identity="OUTAGE RX")
        await give_number(store, faxbox, NUMBER)
        await loopback_carrier(store)
        await bus.connect()
        events = EventLog(bus)
        await events.start()
        sip_port, spool = free_port(), tmp_path / "spool"
        settings = Settings(
            **broker_settings.model_dump(exclude={"infrastructure_backoff_max_s"}),
            **mongo.model_dump(),
            inbound_sip_port=sip_port,
            inbound_line_pace=PACE,
            inbound_spool_dir=spool,
            inbound_outage_retry_after_s=1,
            inbound_pending_retry_s=0.5,
            infrastructure_backoff_max_s=2,
            outbox_sweep_interval_s=1,
        )
        pstn = PstnSettings(
            pstn_sim_sip_port=0,
            pstn_sim_http_port=0,
            pstn_sim_pace=PACE,
            pstn_sim_data_dir=tmp_path / "pstn-sim",
            pstn_sim_inbound_uri=f"sip:127.0.0.1:{sip_port}",
            pstn_sim_answer_timeout_s=20,
            pstn_sim_originate_backoff_s=1,
            pstn_sim_originate_backoff_max_s=2,
        )
        async with service(Runtime("inbound"), settings), running(pstn) as sim:
            yield Rig(ferret, store, faxbox, sim, events, spool)
    finally:
        await bus.close()
        await store.close()
        ferret.stop()


async def _ended(sim: RunningSimulator, record: CallRecord, within_s: float) -> CallRecord:
    return await asyncio.wait_for(sim.calls.wait(record.id), within_s)


async def _stored(rig: Rig, event: InboundFaxReceived, document: Path, tmp_path: Path) -> None:
    tiff = tmp_path / "stored.tif"
    tiff.write_bytes(await rig.store.documents.get(event.tiff))
    assert_pages_identical(document, tiff)


async def test_a_call_during_the_outage_is_refused_then_received_on_a_later_try(
    rig: Rig, three_pages: Path, tmp_path: Path
) -> None:
    rig.ferret.stop()
    caller = "+12125550161"
    record = rig.sim.originate(caller, NUMBER, three_pages, media="t38")
    # Refused while the database is away: 503, Retry-After, and pstn-sim tries again.
    await eventually(lambda: len(record.tries) >= 2, 60, "a second try")
    refused = record.tries[0]
    assert (refused.sip_status, refused.retry_after_s, refused.answered_at) == (503, 1, None)
    rig.ferret.start()

    await _ended(rig.sim, record, 90)
    assert record.outcome is not None
    assert record.outcome.success, record
    assert {t.sip_status for t in record.tries[:-1]} == {503}
    assert record.tries[-1].sip_status == 200
    (event,) = await rig.events.wait_for(InboundFaxReceived, within_s=30)
    assert (event.caller_number, event.called_number) == (caller, NUMBER)
    assert event.statistics.pages_transferred == 3
    await _stored(rig, event, three_pages, tmp_path)
    await asyncio.sleep(1)
    assert len(rig.events.of(InboundFaxReceived)) == 1  # one fax, however many tries


async def test_a_fax_answered_before_the_outage_is_kept_and_delivered_after_it(
    rig: Rig, three_pages: Path, tmp_path: Path
) -> None:
    caller = "+12125550162"
    record = rig.sim.originate(caller, NUMBER, three_pages, media="t38")
    await eventually(lambda: record.answered_at is not None, 30, "the answer")
    rig.ferret.stop()  # the pages are on the line: the database goes away under them
    await _ended(rig.sim, record, 60)
    assert record.outcome is not None
    assert record.outcome.success, record  # the caller's machine says it was received
    assert len(record.tries) == 1
    # Nothing could be stored: the fax waits on the receiver's disk, not announced yet.
    await eventually(lambda: len(rig.pending()) == 1, 30, "the fax kept on disk")
    await asyncio.sleep(2)
    assert rig.events.of(InboundFaxReceived) == []
    assert len(rig.pending()) == 1

    rig.ferret.start()
    started = time.monotonic()
    (event,) = await rig.events.wait_for(InboundFaxReceived, within_s=60)
    assert time.monotonic() - started < 30
    assert (event.caller_number, event.called_number) == (caller, NUMBER)
    assert event.statistics.pages_transferred == 3
    await _stored(rig, event, three_pages, tmp_path)
    await eventually(lambda: rig.pending() == [], 10, "the kept fax to leave the disk")
    assert await rig.store.db["inbound_decisions"].count_documents({"_id": event.fax_id}) == 1
