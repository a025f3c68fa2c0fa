"""The inbound receiver in this process, against real RabbitMQ and FerretDB, over SIP.

The caller is a fax machine made of our own user agent and spandsp engine, on a clock
PACE times faster than real time (the receiver's ``inbound_line_pace`` too).
"""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pikepdf
import pytest

from faxbox.fax.line.pump import run_fax_over_call
from faxbox.fax.outcome import FaxOutcome
from faxbox.fax.session import CallSettings, FaxEngine, FaxSession, T38Session
from faxbox.fax.sip.dialog import Call
from faxbox.fax.sip.sdp import MediaKind
from faxbox.fax.sip.ua import CallFailed, UserAgent
from faxbox.inbound.service import Settings, service
from faxbox.shared.bus import Bus
from faxbox.shared.contracts import InboundFaxFailed, InboundFaxReceived, month_of
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Faxbox, Store
from tests.integration.sip._pages import (
    A4_FINE_ROWS,
    assert_pages_identical,
    save_fax_tiff,
    text_page,
)
from tests.integration.transmitter._support import (
    EventLog,
    give_number,
    loopback_carrier,
    seed_faxbox,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PACE = 10.0
ASSIGNED = "+16465550101"
DISABLED = "+16465550102"
UNASSIGNED = "+16465550199"
CALLER = "+12125550100"
A4_WIDTH_PT = 1728 / 204 * 72
A4_HEIGHT_PT = A4_FINE_ROWS / 196 * 72


@pytest.fixture(scope="module")
def three_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fax_tiff(
        tmp_path_factory.mktemp("doc") / "three.tif", [text_page(n) for n in (1, 2, 3)]
    )


@pytest.fixture(scope="module")
def standard_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("doc") / "standard.tif"
    page = text_page(5, rows=A4_FINE_ROWS // 2)
    page.save(path, compression="group4", dpi=(204, 98))
    return path


@pytest.fixture(scope="module")
async def faxboxes(store: Store) -> tuple[Faxbox, Faxbox]:
    enabled = await seed_faxbox(store, "rx.example.com", identity="ACME RX")
    await give_number(store, enabled, ASSIGNED)
    disabled = await seed_faxbox(store, "off.example.com", enabled=False)
    await give_number(store, disabled, DISABLED)
    await loopback_carrier(store)  # the callers here are on this machine
    return enabled, disabled


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def inbound(
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    faxboxes: tuple[Faxbox, Faxbox],
) -> AsyncIterator[tuple[str, EventLog]]:
    bus = Bus(broker_settings)
    await bus.connect()
    events = EventLog(bus)
    await events.start()
    port = _free_udp_port()
    settings = Settings(
        **broker_settings.model_dump(),
        **mongo_settings.model_dump(),
        inbound_sip_port=port,
        inbound_line_pace=PACE,
    )
    try:
        async with service(Runtime("inbound"), settings):
            yield f"sip:127.0.0.1:{port}", events
    finally:
        await bus.close()


@pytest.fixture
async def caller() -> AsyncIterator[UserAgent]:
    ua = await UserAgent.start(pace=PACE, user="caller")
    yield ua
    await ua.close()


def sender(document: Path, sessions: list[FaxEngine] | None = None) -> object:
    def make(kind: MediaKind) -> FaxEngine:
        settings = CallSettings(file=document, local_identity="CALLER 1")
        session: FaxEngine
        session = T38Session("send", settings) if kind == "t38" else FaxSession("send", settings)
        if sessions is not None:
            sessions.append(session)
        return session

    return make


async def send(
    ua: UserAgent, uri: str, document: Path, *, t38: bool = False, drop_after_pages: int = 0
) -> FaxOutcome:
    call = await ua.dial(uri, CALLER, ASSIGNED)
    if t38:
        assert await call.request_t38()
    sessions: list[FaxEngine] = []
    dropper = None
    if drop_after_pages:
        dropper = asyncio.create_task(_drop(call, sessions, drop_after_pages))
    try:
        return await run_fax_over_call(call, sender(document, sessions))  # type: ignore[arg-type]
    finally:
        if dropper is not None:
            dropper.cancel()


async def _drop(call: Call, sessions: list[FaxEngine], pages: int) -> None:
    while not call.is_ended:
        if sessions and sum(p.result == "MCF" for p in sessions[-1].pages) >= pages:
            await asyncio.sleep(3 / PACE)  # into the next page
            await call.hangup()
            return
        await asyncio.sleep(0.01)


def pdf_pages(data: bytes) -> list[tuple[float, float]]:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        return [(float(p.mediabox[2]), float(p.mediabox[3])) for p in pdf.pages]


async def test_a_fax_to_an_assigned_number_is_stored_and_announced(
    inbound: tuple[str, EventLog],
    caller: UserAgent,
    store: Store,
    faxboxes: tuple[Faxbox, Faxbox],
    three_pages: Path,
    tmp_path: Path,
) -> None:
    uri, events = inbound
    faxbox = faxboxes[0]
    sent = await send(caller, uri, three_pages, t38=True)
    assert sent.success
    (received,) = await events.wait_for(InboundFaxReceived)
    assert (received.caller_number, received.called_number) == (CALLER, ASSIGNED)
    assert (received.faxbox_id, received.user_id) == (faxbox.id, faxbox.owner_user_id)
    assert received.account_id == faxbox.account_id
    assert received.month == month_of(datetime.now(UTC))
    stats = received.statistics
    assert (stats.pages_transferred, stats.remote_station_id) == (3, "CALLER 1")
    assert stats.y_resolution == 7700
    for ref in (received.tiff, received.pdf):
        assert (ref.account_id, ref.month) == (faxbox.account_id, received.month)
    tiff = tmp_path / "got.tif"
    tiff.write_bytes(await store.documents.get(received.tiff))
    assert_pages_identical(three_pages, tiff)
    pdf = await store.documents.get(received.pdf)
    assert received.pdf.content_type == "application/pdf"
    for width, height in pdf_pages(pdf):
        assert width == pytest.approx(A4_WIDTH_PT, abs=0.5)
        assert height == pytest.approx(A4_HEIGHT_PT, abs=0.5)
    assert await store.db["inbound_outbox"].count_documents({}) == 0  # confirmed, forgotten
    # The G4 data is embedded as it is, not re-encoded.
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        image = next(iter(doc.pages[0].Resources.XObject.values()))
        assert "/CCITTFaxDecode" in [str(f) for f in pikepdf.Array(image.Filter)]


async def test_standard_resolution_pages_are_not_squashed(
    inbound: tuple[str, EventLog],
    caller: UserAgent,
    store: Store,
    standard_page: Path,
) -> None:
    uri, events = inbound
    sent = await send(caller, uri, standard_page)  # G.711
    assert sent.success
    (received,) = await events.wait_for(InboundFaxReceived)
    assert received.statistics.y_resolution == 3850
    ((width, height),) = pdf_pages(await store.documents.get(received.pdf))
    assert width == pytest.approx(A4_WIDTH_PT, abs=0.5)
    assert height == pytest.approx(A4_HEIGHT_PT, abs=1)  # half the rows, half the dpi


async def test_unassigned_number_is_404_and_disabled_faxbox_is_480(
    inbound: tuple[str, EventLog], caller: UserAgent
) -> None:
    uri, events = inbound
    with pytest.raises(CallFailed) as unassigned:
        await caller.dial(uri, CALLER, UNASSIGNED)
    assert unassigned.value.status == 404
    with pytest.raises(CallFailed) as disabled:
        await caller.dial(uri, CALLER, DISABLED)
    assert disabled.value.status == 480
    await asyncio.sleep(0.2)
    assert not events.events


async def test_a_partial_fax_keeps_the_pages_that_arrived(
    inbound: tuple[str, EventLog],
    caller: UserAgent,
    store: Store,
    faxboxes: tuple[Faxbox, Faxbox],
    three_pages: Path,
) -> None:
    uri, events = inbound
    sent = await send(caller, uri, three_pages, drop_after_pages=1)
    assert not sent.success
    (failed,) = await events.wait_for(InboundFaxFailed)
    assert failed.pages_received == 1
    assert failed.faxbox_id == faxboxes[0].id
    assert failed.failure.text
    assert failed.partial_pdf is not None
    pages = pdf_pages(await store.documents.get(failed.partial_pdf))
    assert len(pages) == 1
    assert not events.of(InboundFaxReceived)


async def test_readiness_includes_the_sip_socket(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings
) -> None:
    runtime = Runtime("inbound")
    settings = Settings(
        **broker_settings.model_dump(),
        **mongo_settings.model_dump(),
        inbound_sip_port=_free_udp_port(),
        inbound_line_pace=PACE,
    )
    async with service(runtime, settings):
        runtime.ready = True
        healthy, checks = await runtime.health()
    assert healthy
    assert checks == {"broker": True, "database": True, "sip": True}


async def test_a_caller_that_goes_silent_without_a_bye_is_hung_up(
    inbound: tuple[str, EventLog], caller: UserAgent
) -> None:
    uri, events = inbound
    call = await caller.dial(uri, CALLER, ASSIGNED)
    assert await call.request_t38()
    # No packets, no BYE: a caller that vanished. 60 s of call time later we hang up.
    await asyncio.wait_for(call.ended.wait(), 30)
    assert call.remote_hung_up
    (failed,) = await events.wait_for(InboundFaxFailed)
    assert (failed.pages_received, failed.partial_pdf) == (0, None)
