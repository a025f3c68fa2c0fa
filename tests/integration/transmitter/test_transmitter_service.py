"""The transmitter service in this process, against real RabbitMQ and FerretDB, over SIP.

The far end is ``FarEnd``: fax machines made of our own user agent and spandsp engine,
on a clock PACE times faster than real time (the transmitter's ``transmitter_line_pace`` too).
Redial delays come from each request's retry policy (1-2 s here), carried out by the
broker's TTL retry queues.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faxbox.shared.bus import Bus
from faxbox.shared.contracts import (
    FailureClass,
    FaxAttemptFailed,
    FaxFailed,
    FaxSent,
)
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Carrier, Faxbox, Store
from faxbox.transmitter.carriers import COLLECTION as SLOTS
from faxbox.transmitter.jobs import COLLECTION as JOBS
from faxbox.transmitter.service import Settings, service
from tests.integration.sip._pages import (
    assert_pages_identical,
    decode_pages,
    save_fax_tiff,
    text_page,
)
from tests.integration.transmitter._far_end import Behaviour, FarEnd
from tests.integration.transmitter._support import EventLog, eventually, fax_request, seed_faxbox

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PACE = 10.0


@pytest.fixture(scope="module")
def three_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fax_tiff(
        tmp_path_factory.mktemp("doc") / "three.tif", [text_page(n) for n in (1, 2, 3)]
    )


@pytest.fixture(scope="module")
def one_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fax_tiff(tmp_path_factory.mktemp("doc") / "one.tif", [text_page(7)])


@pytest.fixture(scope="module")
def too_narrow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("doc") / "narrow.tif"
    Image.new("1", (1000, 1400), 1).save(path, compression="group4", dpi=(204, 196))
    return path


@pytest.fixture(scope="module")
async def far_end(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FarEnd]:
    far = await FarEnd.start(tmp_path_factory.mktemp("far"), PACE)
    far.behave(r"^\+1212555011", Behaviour("busy"))
    far.behave(r"^\+1212555012", Behaviour("no_answer"))
    far.behave(r"^\+1212555014", Behaviour("drop_on_page", page=2))
    far.behave(r"^\+1212555017", Behaviour("refuse_t38"))
    far.behave(r"^\+1212555018", Behaviour("receive", busy_first=1))
    yield far
    await far.close()


@pytest.fixture(scope="module")
async def faxbox(store: Store) -> Faxbox:
    return await seed_faxbox(store, "tx.example.com")


@pytest.fixture
async def carrier(store: Store, far_end: FarEnd) -> Carrier:
    await store.carriers.delete_many({})
    await store.db[SLOTS].delete_many({})
    return await store.add_carrier(
        Carrier(
            name="far",
            flags=["fax"],
            priority=10,
            channel_cap=4,
            sip_host=far_end.ua.host,
            sip_port=far_end.ua.port,
        )
    )


@pytest.fixture
async def transmitter(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings
) -> AsyncIterator[tuple[Bus, EventLog]]:
    bus = Bus(broker_settings)
    await bus.connect()
    events = EventLog(bus)
    await events.start()
    settings = Settings(
        **(broker_settings.model_dump() | {"prefetch": 16}),
        **mongo_settings.model_dump(),
        transmitter_line_pace=PACE,
        transmitter_max_calls=8,
        transmitter_answer_timeout_s=20,
        transmitter_lease_s=5,
        transmitter_busy_retry_s=1,
    )
    try:
        async with service(Runtime("transmitter"), settings):
            yield bus, events
    finally:
        await bus.close()


async def test_a_fax_goes_through_once_and_is_reported_sent(
    transmitter: tuple[Bus, EventLog],
    store: Store,
    faxbox: Faxbox,
    carrier: Carrier,
    far_end: FarEnd,
    three_pages: Path,
) -> None:
    bus, events = transmitter
    number = "+12125550100"
    request = await fax_request(store, faxbox, three_pages, number, pages=3)
    await bus.publish(request)
    (sent,) = await events.wait_for(FaxSent, request.fax_id)
    assert sent.attempts == 1
    assert sent.carrier_id == carrier.id
    stats = sent.statistics
    assert (stats.pages_transferred, stats.pages_total) == (3, 3)
    assert stats.remote_station_id == "FAR END"
    assert stats.bit_rate in (9600, 14400)
    assert stats.y_resolution == 7700
    assert stats.duration_s > 10  # call time, not the wall-clock time at PACE
    (reception,) = far_end.complete_receptions(number)
    assert reception.media == "t38"  # we asked for T.38 and the far end took it
    assert_pages_identical(three_pages, reception.file, header=True)
    # What is kept as transmitted is what the far end printed, header line and all.
    transmitted = reception.file.with_name("transmitted.tif")
    transmitted.write_bytes(await store.documents.get(sent.transmitted_tiff))
    kept, printed = decode_pages(transmitted), decode_pages(reception.file)
    assert len(kept) == len(printed) == 3
    assert all(np.array_equal(a, b) for a, b in zip(kept, printed, strict=True))
    assert [p.page for p in sent.page_report] == [1, 2, 3]
    assert all(p.confirmed for p in sent.page_report)
    job = await store.db[JOBS].find_one({"_id": request.fax_id})
    assert job is not None
    assert (job["state"], job["attempt"]) == ("sent", 1)

    # A redelivered request for a fax already sent: no call, the same FaxSent again.
    await bus.publish(request)
    again = await events.wait_for(FaxSent, request.fax_id, count=2)
    assert again[1].message_id == sent.message_id
    assert far_end.invites[number] == 1


async def test_busy_then_redial_succeeds(
    transmitter: tuple[Bus, EventLog],
    store: Store,
    faxbox: Faxbox,
    carrier: Carrier,
    far_end: FarEnd,
    one_page: Path,
) -> None:
    bus, events = transmitter
    number = "+12125550180"  # busy to the first call, then a fax machine
    request = await fax_request(store, faxbox, one_page, number, pages=1, delays_s=(1, 2))
    await bus.publish(request)
    (failed_attempt,) = await events.wait_for(FaxAttemptFailed, request.fax_id)
    assert failed_attempt.attempt == 1
    assert failed_attempt.attempts_allowed == 3
    assert failed_attempt.failure.failure_class is FailureClass.line
    assert failed_attempt.failure.sip_status == 486
    assert failed_attempt.failure.text == "The line was busy."
    assert failed_attempt.next_attempt_at is not None
    (sent,) = await events.wait_for(FaxSent, request.fax_id)
    assert sent.attempts == 2
    assert sent.occurred_at >= failed_attempt.next_attempt_at
    assert far_end.invites[number] == 2
    assert len(far_end.complete_receptions(number)) == 1


async def test_no_answer_on_every_attempt_fails_for_good(
    transmitter: tuple[Bus, EventLog],
    store: Store,
    faxbox: Faxbox,
    carrier: Carrier,
    far_end: FarEnd,
    one_page: Path,
) -> None:
    bus, events = transmitter
    number = "+12125550120"
    request = await fax_request(store, faxbox, one_page, number, pages=1, attempts=3)
    await bus.publish(request)
    (failed,) = await events.wait_for(FaxFailed, request.fax_id, within_s=90)
    attempts = events.of(FaxAttemptFailed, request.fax_id)
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert attempts[-1].next_attempt_at is None
    assert failed.attempts == 3
    assert failed.failure.failure_class is FailureClass.line
    assert failed.failure.sip_status == 408
    assert failed.failure.text == "Nobody answered the call."
    assert (failed.pages_sent, failed.pages_total) == (0, 1)
    assert far_end.invites[number] == 3


async def test_line_dropped_during_page_two_of_three(
    transmitter: tuple[Bus, EventLog],
    store: Store,
    faxbox: Faxbox,
    carrier: Carrier,
    far_end: FarEnd,
    three_pages: Path,
) -> None:
    bus, events = transmitter
    number = "+12125550140"
    request = await fax_request(store, faxbox, three_pages, number, pages=3, attempts=2)
    await bus.publish(request)
    (failed,) = await events.wait_for(FaxFailed, request.fax_id, within_s=120)
    first, last = events.of(FaxAttemptFailed, request.fax_id)
    assert first.next_attempt_at is not None
    assert last.next_attempt_at is None
    # The far end drops every call during its second page: the redial resumed at page 2,
    # so the far end confirmed page 1 in the first call and page 2 in the second.
    assert [r.pages_sent for r in (first, last, failed)] == [1, 2, 2]
    for report in (first, last, failed):
        assert report.failure.failure_class in (FailureClass.line, FailureClass.protocol)
    assert [(p.page, p.confirmed) for p in last.page_report][:1] == [(2, True)]
    assert failed.partial
    assert failed.pages_total == 3
    assert failed.attempts == 2
    assert far_end.answered[number] == 2
    assert not far_end.complete_receptions(number)


async def test_t38_refused_falls_back_to_g711(
    transmitter: tuple[Bus, EventLog],
    store: Store,
    faxbox: Faxbox,
    carrier: Carrier,
    far_end: FarEnd,
    three_pages: Path,
) -> None:
    bus, events = transmitter
    number = "+12125550170"
    request = await fax_request(store, faxbox, three_pages, number, pages=3)
    await bus.publish(request)
    (sent,) = await events.wait_for(FaxSent, request.fax_id, within_s=90)
    assert sent.statistics.pages_transferred == 3
    (reception,) = far_end.complete_receptions(number)
    assert reception.media == "audio"
    assert_pages_identical(three_pages, reception.file, header=True)


async def test_no_eligible_carrier_is_no_available_resources(
    transmitter: tuple[Bus, EventLog],
    store: Store,
    faxbox: Faxbox,
    carrier: Carrier,
    far_end: FarEnd,
    one_page: Path,
) -> None:
    bus, events = transmitter
    await store.carriers.delete_many({})
    # Not flagged for fax; and one that only takes calls carrying the "premium" flag.
    await store.add_carrier(
        Carrier(name="voice", flags=["voice"], sip_host="127.0.0.1", sip_port=far_end.ua.port)
    )
    premium = await store.add_carrier(
        Carrier(
            name="premium",
            flags=["fax"],
            require_flags=["premium"],
            sip_host="127.0.0.1",
            sip_port=far_end.ua.port,
        )
    )
    number = "+12125550101"
    request = await fax_request(store, faxbox, one_page, number, pages=1)
    await bus.publish(request)
    (failed,) = await events.wait_for(FaxFailed, request.fax_id)
    assert failed.failure.failure_class is FailureClass.resources
    assert failed.failure.text == "no available resources"
    assert (failed.attempts, failed.pages_sent) == (0, 0)
    assert far_end.invites[number] == 0

    # The same kind of fax carrying the flag may use the premium carrier.
    flagged = await fax_request(store, faxbox, one_page, number, pages=1, route_flags=("premium",))
    await bus.publish(flagged)
    (sent,) = await events.wait_for(FaxSent, flagged.fax_id)
    assert sent.carrier_id == premium.id


async def test_a_bad_tiff_is_refused_before_any_call(
    transmitter: tuple[Bus, EventLog],
    store: Store,
    faxbox: Faxbox,
    carrier: Carrier,
    far_end: FarEnd,
    too_narrow: Path,
) -> None:
    bus, events = transmitter
    number = "+12125550102"
    request = await fax_request(store, faxbox, too_narrow, number, pages=1)
    await bus.publish(request)
    (failed,) = await events.wait_for(FaxFailed, request.fax_id)
    assert failed.failure.failure_class is FailureClass.document
    assert "1728" in failed.failure.text or "wide" in failed.failure.text
    assert failed.attempts == 0
    assert far_end.invites[number] == 0
    assert not events.of(FaxAttemptFailed, request.fax_id)


async def test_channel_cap_is_shared_and_never_exceeded(
    transmitter: tuple[Bus, EventLog],
    store: Store,
    faxbox: Faxbox,
    carrier: Carrier,
    far_end: FarEnd,
    one_page: Path,
) -> None:
    bus, events = transmitter
    await store.carriers.update_one({"_id": carrier.id}, {"$set": {"channel_cap": 1}})
    peak = 0

    requests = [
        await fax_request(store, faxbox, one_page, f"+1212555019{i}", pages=1) for i in range(3)
    ]
    for request in requests:
        await bus.publish(request)

    async def all_sent() -> bool:
        nonlocal peak
        peak = max(peak, far_end.active)
        return all(events.of(FaxSent, r.fax_id) for r in requests)

    await eventually(all_sent, 120, "all three sent")
    assert peak == 1
    for request in requests:
        assert len(far_end.complete_receptions(request.destination)) == 1


async def test_readiness_includes_the_sip_socket(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings
) -> None:
    runtime = Runtime("transmitter")
    settings = Settings(**broker_settings.model_dump(), **mongo_settings.model_dump())
    async with service(runtime, settings):
        runtime.ready = True
        healthy, checks = await runtime.health()
    assert healthy
    assert checks == {"broker": True, "database": True, "sip": True}
