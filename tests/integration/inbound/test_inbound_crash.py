"""An inbound receiver as a real process (``python -m faxbox.inbound``) that dies mid-call.

The receiver dies right after the last page of a fax is on its disk (the test hook
``FAXBOX_TEST_CRASH_AT=inbound.after_last_page``: the sender's end of document received,
the page written, nothing stored). Started again on the same spool, it stores what the
dead process was receiving and announces it once: the fax is in the owner's faxbox,
pixel for pixel. Everything is real: pstn-sim sends the fax over SIP and T.30, the
receiver stores in the shared FerretDB and publishes to RabbitMQ.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faxbox.pstn_sim.service import RunningSimulator, running
from faxbox.pstn_sim.settings import PstnSettings
from faxbox.shared import crashpoints
from faxbox.shared.bus import Bus
from faxbox.shared.contracts import InboundFaxFailed, InboundFaxReceived
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Store
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
NUMBER = "+16465550121"
POINT = "inbound.after_last_page"


class Receiver:
    """``python -m faxbox.inbound`` on one SIP port and spool, started again at will."""

    def __init__(
        self, broker: BrokerSettings, mongo: MongoSettings, directory: Path, sip_port: int
    ) -> None:
        self.environment = {
            **os.environ,
            "FAXBOX_AMQP_URL": broker.amqp_url,
            "FAXBOX_EXCHANGE_PREFIX": broker.exchange_prefix,
            "FAXBOX_MONGO_URL": mongo.mongo_url,
            "FAXBOX_MONGO_DB": mongo.mongo_db,
            "FAXBOX_INBOUND_SIP_PORT": str(sip_port),
            "FAXBOX_INBOUND_LINE_PACE": str(PACE),
            "FAXBOX_INBOUND_SPOOL_DIR": str(directory / "spool"),
            "FAXBOX_INBOUND_CARRIERS_REFRESH_S": "0.2",
            "FAXBOX_LOG_LEVEL": "INFO",
        }
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.directory / "inbound.log"

    def spawn(self, **env: str) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "faxbox.inbound"],
                env={**self.environment, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        return self.proc

    async def start(self, **env: str) -> subprocess.Popen[bytes]:
        proc = self.spawn(**env)
        await eventually(
            lambda: self.log.read_text(errors="replace").count("service ready") >= self.starts,
            30,
            "the inbound receiver ready",
        )
        return proc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[tuple[RunningSimulator, int]]:
    sip_port = free_port()
    settings = PstnSettings(
        pstn_sim_sip_port=0,
        pstn_sim_http_port=0,
        pstn_sim_pace=PACE,
        pstn_sim_data_dir=tmp_path / "pstn-sim",
        pstn_sim_inbound_uri=f"sip:127.0.0.1:{sip_port}",
        pstn_sim_answer_timeout_s=20,
    )
    async with running(settings) as simulator:
        yield simulator, sip_port


async def test_a_receiver_killed_after_the_last_page_delivers_the_fax_once_restarted(
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    store: Store,
    sim: tuple[RunningSimulator, int],
    tmp_path: Path,
) -> None:
    simulator, sip_port = sim
    faxbox = await seed_faxbox(store, "crash.example.com", identity="CRASH RX")
    await give_number(store, faxbox, NUMBER)
    await loopback_carrier(store)
    document = save_fax_tiff(tmp_path / "three.tif", [text_page(n) for n in (1, 2, 3)])
    bus = Bus(broker_settings)
    await bus.connect()
    events = EventLog(bus)
    await events.start()
    receiver = Receiver(broker_settings, mongo_settings, tmp_path, sip_port)
    try:
        crasher = await receiver.start(FAXBOX_TEST_CRASH_AT=POINT)
        record = simulator.originate("+12125550163", NUMBER, document, media="t38")
        assert await asyncio.to_thread(crasher.wait, 60) == crashpoints.EXIT_STATUS[POINT]
        await asyncio.wait_for(simulator.calls.wait(record.id), 60)
        # The sender never heard the last page confirmed; nothing was stored or announced.
        assert record.outcome is not None
        assert record.outcome.pages == 2
        assert events.of(InboundFaxReceived) == []
        left = list((tmp_path / "spool" / "receiving").iterdir())
        assert len(left) == 1

        await receiver.start()
        (event,) = await events.wait_for(InboundFaxReceived, within_s=30)
        assert event.fax_id == left[0].name
        assert (event.caller_number, event.called_number) == ("+12125550163", NUMBER)
        assert event.statistics.pages_transferred == 3
        stored = tmp_path / "stored.tif"
        stored.write_bytes(await store.documents.get(event.tiff))
        assert_pages_identical(document, stored)
        assert not (tmp_path / "spool" / "receiving" / event.fax_id).exists()
        await asyncio.sleep(2)
        assert len(events.of(InboundFaxReceived)) == 1
        assert events.of(InboundFaxFailed) == []
        assert "was being received when the process died" in receiver.log.read_text()
    finally:
        receiver.stop()
        await bus.close()
