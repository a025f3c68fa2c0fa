"""Transmitter and inbound receiver against the real pstn-sim, run as its own process.

``python -m faxbox.pstn_sim`` with a scenario table of this test (number pattern →
behaviour), on a clock PACE times faster than real time; the transmitter and the
inbound receiver run in this process through their own wiring, on the same clock. The
simulator forwards calls to our faxbox numbers (+1 646 555 01xx) to the inbound
receiver, so a fax from one faxbox to another's number crosses the whole system.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from faxbox.inbound import service as inbound_service
from faxbox.pstn_sim.pages import page_digests
from faxbox.render.header import strip_bits
from faxbox.shared.bus import Bus
from faxbox.shared.contracts import (
    FailureClass,
    FaxAttemptFailed,
    FaxFailed,
    FaxSent,
    InboundFaxReceived,
)
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Carrier, Faxbox, Store
from faxbox.shared.tagline import HeaderFields, header_text
from faxbox.transmitter import service as transmitter_service
from faxbox.transmitter.carriers import COLLECTION as SLOTS
from tests.integration.sip._pages import (
    HEADER_ROWS_FINE,
    assert_pages_identical,
    decode_pages,
    save_fax_tiff,
    text_page,
)
from tests.integration.transmitter._support import (
    EventLog,
    eventually,
    fax_request,
    give_number,
    seed_faxbox,
)
from tests.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PACE = 10.0
RECEIVE = "+12125550100"
BUSY = "+12125550111"
NO_ANSWER = "+12125550121"
DROP = "+12125550141"
HUMAN = "+12125550161"
REFUSE_T38 = "+12125550171"
BUSY_ONCE = "+12125550181"
CUT_ONCE = "+12125550197"
FAXBOX_B = "+16465550123"
CALLER = "+12125550188"

SCENARIOS = [
    {"pattern": r"^\+1212555011\d$", "behaviour": "busy"},
    {"pattern": r"^\+1212555012\d$", "behaviour": "no_answer", "ring_s": 20},
    {"pattern": r"^\+1212555014\d$", "behaviour": "drop_on_page", "page": 2},
    {"pattern": r"^\+1212555016\d$", "behaviour": "human", "hold_s": 60},
    {"pattern": r"^\+1212555017\d$", "behaviour": "refuse_t38"},
    {"pattern": r"^\+1212555018\d$", "behaviour": "receive", "busy_first": 1},
    {"pattern": r"^\+12125550197$", "behaviour": "drop_on_page", "page": 3, "drop_first": 1},
    {"pattern": r"^\+164655501\d\d$", "behaviour": "forward"},
]


@dataclass
class Sim:
    control: str
    sip_port: int
    proc: subprocess.Popen[bytes]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.control}{path}", timeout=10) as response:
            raw = response.read()
            if response.headers["Content-Type"] == "image/tiff":
                return raw
            return json.loads(raw)

    def post(self, path: str, data: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.control}{path}", data=json.dumps(data).encode(), method="POST"
        )
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def calls_to(self, number: str) -> list[dict[str, Any]]:
        return [c for c in self.get("/calls") if c["to"] == number]

    def ended_calls_to(self, number: str) -> list[dict[str, Any]]:
        return [c for c in self.calls_to(number) if c["ended_at"]]


@pytest.fixture(scope="module")
def inbound_port() -> int:
    return free_port(socket.SOCK_DGRAM)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, inbound_port: int) -> Iterator[Sim]:
    directory = tmp_path_factory.mktemp("pstn")
    table = directory / "scenarios.json"
    table.write_text(json.dumps(SCENARIOS))
    sip_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    env = {
        **os.environ,
        "FAXBOX_PSTN_SIM_SIP_PORT": str(sip_port),
        "FAXBOX_PSTN_SIM_HTTP_PORT": str(http_port),
        "FAXBOX_PSTN_SIM_PACE": str(PACE),
        "FAXBOX_PSTN_SIM_SCENARIOS": str(table),
        "FAXBOX_PSTN_SIM_DATA_DIR": str(directory / "data"),
        "FAXBOX_PSTN_SIM_INBOUND_URI": f"sip:127.0.0.1:{inbound_port}",
        "FAXBOX_PSTN_SIM_ANSWER_TIMEOUT_S": "20",
    }
    log = (directory / "pstn-sim.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "faxbox.pstn_sim"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    sim = Sim(f"http://127.0.0.1:{http_port}", sip_port, proc)
    try:
        for _ in range(200):
            try:
                sim.get("/healthz")
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"pstn-sim exited: {(directory / 'pstn-sim.log').read_text()}"
                    ) from None
                time.sleep(0.1)
        else:
            raise RuntimeError("pstn-sim did not start")
        yield sim
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def three_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fax_tiff(
        tmp_path_factory.mktemp("doc") / "three.tif", [text_page(n) for n in (1, 2, 3)]
    )


@pytest.fixture(scope="module")
def five_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fax_tiff(
        tmp_path_factory.mktemp("doc") / "five.tif", [text_page(n) for n in range(1, 6)]
    )


@pytest.fixture(scope="module")
async def faxboxes(store: Store, sim: Sim) -> tuple[Faxbox, Faxbox]:
    await store.carriers.delete_many({})
    await store.db[SLOTS].delete_many({})
    await store.add_carrier(
        Carrier(
            name="pstn-sim",
            flags=["fax"],
            channel_cap=8,
            sip_host="127.0.0.1",
            sip_port=sim.sip_port,
        )
    )
    a = await seed_faxbox(store, "a.example.com", identity="FAXBOX A")
    b = await seed_faxbox(store, "b.example.com", identity="FAXBOX B")
    await give_number(store, b, FAXBOX_B)
    return a, b


@pytest.fixture
async def system(
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    inbound_port: int,
    faxboxes: tuple[Faxbox, Faxbox],
) -> AsyncIterator[tuple[Bus, EventLog]]:
    bus = Bus(broker_settings)
    await bus.connect()
    events = EventLog(bus)
    await events.start()
    common: dict[str, Any] = {
        **(broker_settings.model_dump() | {"prefetch": 16}),
        **mongo_settings.model_dump(),
    }
    tx_settings = transmitter_service.Settings(
        **common,
        transmitter_line_pace=PACE,
        transmitter_max_calls=8,
        transmitter_answer_timeout_s=60,
        transmitter_lease_s=5,
    )
    rx_settings = inbound_service.Settings(
        **common, inbound_line_pace=PACE, inbound_sip_port=inbound_port
    )
    try:
        async with (
            transmitter_service.service(Runtime("transmitter"), tx_settings),
            inbound_service.service(Runtime("inbound"), rx_settings),
        ):
            yield bus, events
    finally:
        await bus.close()


async def _ended(sim: Sim, number: str, count: int) -> list[dict[str, Any]]:
    await eventually(
        lambda: len(sim.ended_calls_to(number)) >= count, 60, f"{count} call(s) to {number}"
    )
    return sim.ended_calls_to(number)


async def test_success_pages_arrive_intact_over_t38(
    system: tuple[Bus, EventLog],
    sim: Sim,
    store: Store,
    faxboxes: tuple[Faxbox, Faxbox],
    three_pages: Path,
    tmp_path: Path,
) -> None:
    bus, events = system
    request = await fax_request(store, faxboxes[0], three_pages, RECEIVE, pages=3)
    await bus.publish(request)
    (sent,) = await events.wait_for(FaxSent, request.fax_id, within_s=90)
    assert (sent.attempts, sent.statistics.pages_transferred) == (1, 3)
    assert sent.statistics.remote_station_id  # the simulated machine's CSI
    (call,) = await _ended(sim, RECEIVE, 1)
    assert (call["behaviour"], call["media"], call["pages_received"]) == ("receive", "t38", 3)
    received = tmp_path / "got.tif"
    received.write_bytes(sim.get(f"/calls/{call['id']}/tiff"))
    assert_pages_identical(three_pages, received, header=True)


async def test_busy_on_every_attempt_fails_as_a_line_failure(
    system: tuple[Bus, EventLog],
    sim: Sim,
    store: Store,
    faxboxes: tuple[Faxbox, Faxbox],
    three_pages: Path,
) -> None:
    bus, events = system
    request = await fax_request(store, faxboxes[0], three_pages, BUSY, pages=3, attempts=2)
    await bus.publish(request)
    (failed,) = await events.wait_for(FaxFailed, request.fax_id, within_s=60)
    assert failed.failure.failure_class is FailureClass.line
    assert failed.failure.sip_status == 486
    assert [a.attempt for a in events.of(FaxAttemptFailed, request.fax_id)] == [1, 2]
    assert len(await _ended(sim, BUSY, 2)) == 2


async def test_busy_then_redial_succeeds(
    system: tuple[Bus, EventLog],
    sim: Sim,
    store: Store,
    faxboxes: tuple[Faxbox, Faxbox],
    three_pages: Path,
) -> None:
    bus, events = system
    request = await fax_request(
        store, faxboxes[0], three_pages, BUSY_ONCE, pages=3, attempts=3, delays_s=(1, 2)
    )
    await bus.publish(request)
    (sent,) = await events.wait_for(FaxSent, request.fax_id, within_s=90)
    (failed_attempt,) = events.of(FaxAttemptFailed, request.fax_id)
    assert failed_attempt.attempt == 1
    assert failed_attempt.failure.failure_class is FailureClass.line
    assert failed_attempt.failure.sip_status == 486
    assert failed_attempt.next_attempt_at is not None
    assert (sent.attempts, sent.statistics.pages_transferred) == (2, 3)
    assert sent.occurred_at >= failed_attempt.next_attempt_at
    calls = await _ended(sim, BUSY_ONCE, 2)
    assert [(c["behaviour"], c["sip_status"]) for c in calls] == [("busy", 486), ("receive", 200)]
    completed = [c for c in calls if c["outcome"] is not None and c["outcome"]["success"]]
    assert len(completed) == 1
    assert completed[0]["pages_received"] == 3
    assert sim.get("/counts")[BUSY_ONCE] == 2


async def test_no_answer_on_every_attempt_fails(
    system: tuple[Bus, EventLog],
    sim: Sim,
    store: Store,
    faxboxes: tuple[Faxbox, Faxbox],
    three_pages: Path,
) -> None:
    bus, events = system
    request = await fax_request(store, faxboxes[0], three_pages, NO_ANSWER, pages=3, attempts=2)
    await bus.publish(request)
    (failed,) = await events.wait_for(FaxFailed, request.fax_id, within_s=90)
    assert failed.failure.failure_class is FailureClass.line
    assert failed.failure.text == "Nobody answered the call."
    assert failed.attempts == 2


async def test_drop_during_page_two_of_three(
    system: tuple[Bus, EventLog],
    sim: Sim,
    store: Store,
    faxboxes: tuple[Faxbox, Faxbox],
    three_pages: Path,
) -> None:
    bus, events = system
    request = await fax_request(store, faxboxes[0], three_pages, DROP, pages=3, attempts=1)
    await bus.publish(request)
    (failed,) = await events.wait_for(FaxFailed, request.fax_id, within_s=90)
    assert (failed.pages_sent, failed.pages_total) == (1, 3)
    assert failed.failure.failure_class in (FailureClass.line, FailureClass.protocol)
    (call,) = await _ended(sim, DROP, 1)
    assert call["pages_received"] == 1


async def test_t38_refused_goes_through_on_g711(
    system: tuple[Bus, EventLog],
    sim: Sim,
    store: Store,
    faxboxes: tuple[Faxbox, Faxbox],
    three_pages: Path,
) -> None:
    bus, events = system
    request = await fax_request(store, faxboxes[0], three_pages, REFUSE_T38, pages=3)
    await bus.publish(request)
    (sent,) = await events.wait_for(FaxSent, request.fax_id, within_s=90)
    assert sent.statistics.pages_transferred == 3
    (call,) = await _ended(sim, REFUSE_T38, 1)
    assert (call["media"], call["pages_received"]) == ("g711", 3)


async def test_a_person_answering_is_not_a_fax(
    system: tuple[Bus, EventLog],
    sim: Sim,
    store: Store,
    faxboxes: tuple[Faxbox, Faxbox],
    three_pages: Path,
) -> None:
    bus, events = system
    request = await fax_request(store, faxboxes[0], three_pages, HUMAN, pages=3, attempts=1)
    await bus.publish(request)
    (failed,) = await events.wait_for(FaxFailed, request.fax_id, within_s=90)
    assert failed.failure.failure_class in (FailureClass.line, FailureClass.protocol)
    assert failed.pages_sent == 0


async def test_a_fax_to_another_faxbox_crosses_the_whole_system(
    system: tuple[Bus, EventLog],
    sim: Sim,
    store: Store,
    faxboxes: tuple[Faxbox, Faxbox],
    three_pages: Path,
    tmp_path: Path,
) -> None:
    bus, events = system
    a, b = faxboxes
    request = await fax_request(store, a, three_pages, FAXBOX_B, pages=3)
    await bus.publish(request)
    (sent,) = await events.wait_for(FaxSent, request.fax_id, within_s=90)
    (received,) = await events.wait_for(InboundFaxReceived, within_s=30)
    assert received.faxbox_id == b.id
    assert received.called_number == FAXBOX_B
    assert received.statistics.pages_transferred == 3
    assert received.statistics.remote_station_id == "ACME FAX"  # the request's identity
    assert sent.statistics.remote_station_id == "FAXBOX B"
    tiff = tmp_path / "b.tif"
    tiff.write_bytes(await store.documents.get(received.tiff))
    assert_pages_identical(three_pages, tiff, header=True)


async def test_the_network_originates_a_fax_to_our_number(
    system: tuple[Bus, EventLog],
    sim: Sim,
    store: Store,
    faxboxes: tuple[Faxbox, Faxbox],
    three_pages: Path,
) -> None:
    _, events = system
    before = len(events.of(InboundFaxReceived))
    call = sim.post(
        "/originate",
        {"from": CALLER, "to": FAXBOX_B, "document": str(three_pages), "media": "g711"},
    )
    received = await events.wait_for(InboundFaxReceived, count=before + 1, within_s=90)
    fax = received[-1]
    assert (fax.caller_number, fax.called_number) == (CALLER, FAXBOX_B)
    assert fax.faxbox_id == faxboxes[1].id
    assert fax.statistics.pages_transferred == 3
    record = sim.get(f"/calls/{call['id']}")
    assert record["direction"] == "from_sim"


@pytest.fixture
async def one_call_at_once(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, faxboxes: tuple[Faxbox, Faxbox]
) -> AsyncIterator[tuple[Bus, EventLog]]:
    """A transmitter whose bound of calls at once (admission) is 1, far below max_calls."""
    bus = Bus(broker_settings)
    await bus.connect()
    events = EventLog(bus)
    await events.start()
    settings = transmitter_service.Settings(
        **(broker_settings.model_dump() | {"prefetch": 16}),
        **mongo_settings.model_dump(),
        transmitter_line_pace=PACE,
        transmitter_max_calls=8,
        transmitter_admit_calls=1,
        overload_retry_after_s=1,
        transmitter_lease_s=5,
    )
    try:
        async with transmitter_service.service(Runtime("transmitter"), settings):
            yield bus, events
    finally:
        await bus.close()


async def test_a_burst_beyond_the_calls_bound_waits_unclaimed_and_every_fax_is_sent(
    one_call_at_once: tuple[Bus, EventLog],
    sim: Sim,
    store: Store,
    faxboxes: tuple[Faxbox, Faxbox],
    three_pages: Path,
) -> None:
    bus, events = one_call_at_once
    deferred_before = REGISTRY.get_sample_value("faxbox_transmitter_overload_deferred_total")
    numbers = ["+12125550191", "+12125550192", "+12125550193"]
    requests = [
        await fax_request(store, faxboxes[0], three_pages, number, pages=3, attempts=1)
        for number in numbers
    ]
    for request in requests:  # all at once: 8 channels free, room for all of them
        await bus.publish(request)
    for request in requests:
        (sent,) = await events.wait_for(FaxSent, request.fax_id, within_s=120)
        # Waiting for the bound counted no attempt: the only one allowed was the call.
        assert (sent.attempts, sent.statistics.pages_transferred) == (1, 3)
    deferred = REGISTRY.get_sample_value("faxbox_transmitter_overload_deferred_total")
    assert (deferred or 0) > (deferred_before or 0)
    calls = [c for n in numbers for c in await _ended(sim, n, 1)]
    assert len(calls) == 3  # one call per fax, none failed and redialled
    # The far end never had two of these calls up at once.
    spans = sorted((c["started_at"], c["ended_at"]) for c in calls)
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert started >= ended, spans


async def test_a_call_cut_after_page_two_of_five_is_resumed_with_pages_three_to_five(
    system: tuple[Bus, EventLog],
    sim: Sim,
    store: Store,
    faxboxes: tuple[Faxbox, Faxbox],
    five_pages: Path,
    tmp_path: Path,
) -> None:
    bus, events = system
    request = await fax_request(
        store, faxboxes[0], five_pages, CUT_ONCE, pages=5, attempts=3, delays_s=(1, 2)
    )
    # Only the page number in the header line, so every strip can be drawn here to compare.
    header_format = "%%d|page %%p/%%t"
    settings = request.settings.model_copy(update={"header_format": header_format})
    request = request.model_copy(update={"settings": settings})
    await bus.publish(request)
    (sent,) = await events.wait_for(FaxSent, request.fax_id, within_s=150)
    (cut,) = events.of(FaxAttemptFailed, request.fax_id)
    assert (cut.attempt, cut.pages_sent) == (1, 2)
    assert (sent.attempts, sent.calls) == (2, 2)
    assert (sent.statistics.pages_transferred, sent.statistics.pages_total) == (5, 5)
    # Each page as reported by the call that delivered it: 1-2 the cut call, 3-5 the redial.
    assert [(p.page, p.confirmed) for p in sent.page_report] == [(n, True) for n in range(1, 6)]

    first, redial = await _ended(sim, CUT_ONCE, 2)
    assert (first["behaviour"], first["pages_received"]) == ("drop_on_page", 2)
    assert (redial["behaviour"], redial["pages_received"]) == ("receive", 3)
    # Which pages of the document each call carried, by the simulator's own account.
    document = page_digests(five_pages, below_header=False)
    assert len(set(document)) == 5
    assert first["page_digests"] == document[:2]
    assert redial["page_digests"] == document[2:]

    # Pixel for pixel: the far end holds pages 1-5 once each, each headed "page x/5".
    originals = decode_pages(five_pages)
    numbers = iter(range(1, 6))
    for call in (first, redial):
        got = tmp_path / f"{call['id']}.tif"
        got.write_bytes(sim.get(f"/calls/{call['id']}/tiff"))
        for page in decode_pages(got):
            number = next(numbers)
            original = originals[number - 1]
            assert page.shape[0] - original.shape[0] == HEADER_ROWS_FINE
            assert np.array_equal(page[HEADER_ROWS_FINE:], original)
            fields = HeaderFields(moment=sent.occurred_at, destination=CUT_ONCE)
            strip = strip_bits(header_text(header_format, fields, number, 5))
            assert np.array_equal(np.packbits(page[:HEADER_ROWS_FINE] == 0, axis=1), strip)
    assert next(numbers, None) is None
