"""Transmitters as real processes (``python -m faxbox.transmitter``) that die at bad moments.

- SIGKILL mid-call: the broker redelivers the request to the other worker, which waits
  for the dead worker's lease to run out, then dials again: the fax reaches the far
  end in full exactly once (the first, cut-off call never completed).
- Exit after the far end confirmed and FaxSent was published, before the ack (the
  test hook ``FAXBOX_TEST_CRASH_AT=transmitter.before_ack``): the next worker finds the job
  sent, dials nothing, and publishes the same FaxSent (same message id) once more.
- Exit right after the far end confirmed the last page (``FAXBOX_TEST_CRASH_AT=
  transmitter.after_last_confirmation``), before the attempt's outcome was recorded:
  the job says every page was confirmed, so the next worker ends it as sent without a
  second call.
- The database goes away mid-call and the worker is SIGKILLed during the outage: the
  pages confirmed meanwhile could not be written to the job, so the worker handed the
  job back to the broker with them as a note before it died; the next worker, once the
  database is back, ends the fax as sent without a second call.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from faxbox.shared import crashpoints
from faxbox.shared.bus import Bus
from faxbox.shared.contracts import FaxSent
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Carrier, Faxbox, Store
from faxbox.transmitter.carriers import COLLECTION as SLOTS
from faxbox.transmitter.jobs import COLLECTION as JOBS
from faxbox.transmitter.service import TEST_CRASH_EXIT_CODE
from tests.cuttable import cuttable
from tests.integration.sip._pages import assert_pages_identical, save_fax_tiff, text_page
from tests.integration.transmitter._far_end import FarEnd
from tests.integration.transmitter._support import EventLog, eventually, fax_request, seed_faxbox

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PACE = 10.0
LEASE_S = 3


@pytest.fixture(scope="module")
def three_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fax_tiff(
        tmp_path_factory.mktemp("doc") / "three.tif", [text_page(n) for n in (1, 2, 3)]
    )


@pytest.fixture(scope="module")
async def far_end(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FarEnd]:
    far = await FarEnd.start(tmp_path_factory.mktemp("far"), PACE)
    far.max_call_s = 100  # the cut-off call: 10 s (wall), then its BYE times out (32 s)
    yield far
    await far.close()


@pytest.fixture(scope="module")
async def faxbox(store: Store, far_end: FarEnd) -> Faxbox:
    await store.carriers.delete_many({})
    await store.db[SLOTS].delete_many({})
    await store.add_carrier(
        Carrier(
            name="far", flags=["fax"], channel_cap=4, sip_host="127.0.0.1", sip_port=far_end.ua.port
        )
    )
    return await seed_faxbox(store, "crash.example.com")


class Workers:
    def __init__(self, broker: BrokerSettings, mongo: MongoSettings, logs: Path) -> None:
        self.broker = broker
        self.mongo = mongo
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, worker_id: str, **env: str) -> subprocess.Popen[bytes]:
        environment = {
            **os.environ,
            "FAXBOX_AMQP_URL": self.broker.amqp_url,
            "FAXBOX_EXCHANGE_PREFIX": self.broker.exchange_prefix,
            "FAXBOX_RETRY_DELAYS_S": "[1,2]",
            "FAXBOX_MONGO_URL": self.mongo.mongo_url,
            "FAXBOX_MONGO_DB": self.mongo.mongo_db,
            "FAXBOX_TRANSMITTER_LINE_PACE": str(PACE),
            "FAXBOX_TRANSMITTER_LEASE_S": str(LEASE_S),
            "FAXBOX_TRANSMITTER_WORKER_ID": worker_id,
            "FAXBOX_LOG_LEVEL": "INFO",
            **env,
        }
        log = (self.logs / f"{worker_id}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "faxbox.transmitter"],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs[worker_id] = proc
        return proc

    def log_of(self, worker_id: str) -> str:
        return (self.logs / f"{worker_id}.log").read_text(errors="replace")

    async def ready(self, *worker_ids: str) -> None:
        for worker_id in worker_ids:
            await eventually(
                lambda w=worker_id: "service ready" in self.log_of(w),  # type: ignore[misc]
                30,
                f"{worker_id} ready",
            )

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings, tmp_path: Path
) -> Iterator[Workers]:
    w = Workers(broker_settings, mongo_settings, tmp_path)
    yield w
    w.stop_all()


@pytest.fixture
async def events(broker_settings: BrokerSettings) -> AsyncIterator[tuple[Bus, EventLog]]:
    bus = Bus(broker_settings)
    await bus.connect()
    log = EventLog(bus)
    await log.start()
    await bus.declare_service("transmitter")
    yield bus, log
    await bus.close()


async def test_sigkill_mid_call_is_redialled_by_another_worker_and_arrives_once(
    workers: Workers,
    events: tuple[Bus, EventLog],
    store: Store,
    faxbox: Faxbox,
    far_end: FarEnd,
    three_pages: Path,
) -> None:
    bus, log = events
    workers.spawn("w1")
    workers.spawn("w2")
    await workers.ready("w1", "w2")
    number = "+12125550103"
    request = await fax_request(store, faxbox, three_pages, number, pages=3)
    await bus.publish(request)

    async def in_call() -> bool:
        job = await store.db[JOBS].find_one({"_id": request.fax_id})
        return job is not None and job["state"] == "in_call" and far_end.active == 1

    await eventually(in_call, 30, "the fax on the line")
    await asyncio.sleep(1.5)  # ~15 s of call time: the first page is on its way
    job = await store.db[JOBS].find_one({"_id": request.fax_id})
    assert job is not None
    victim = job["worker_id"]
    survivor = "w2" if victim == "w1" else "w1"
    workers.procs[victim].send_signal(signal.SIGKILL)
    await asyncio.to_thread(workers.procs[victim].wait, 5)

    (sent,) = await log.wait_for(FaxSent, request.fax_id, within_s=120)
    assert sent.attempts == 2
    assert sent.statistics.pages_transferred == 3
    job = await store.db[JOBS].find_one({"_id": request.fax_id})
    assert job is not None
    assert (job["state"], job["worker_id"], job["attempt"]) == ("sent", survivor, 2)
    # On the line twice (the cut-off call, then the redial), arrived in full once.
    await eventually(lambda: len(far_end.receptions) >= 2, 75, "both calls ended")
    assert far_end.answered[number] == 2
    (complete,) = far_end.complete_receptions(number)
    assert_pages_identical(three_pages, complete.file, header=True)
    await asyncio.sleep(1)
    assert len(log.of(FaxSent, request.fax_id)) == 1


async def test_exit_after_the_far_end_confirmed_sends_nothing_again(
    workers: Workers,
    events: tuple[Bus, EventLog],
    store: Store,
    faxbox: Faxbox,
    far_end: FarEnd,
    three_pages: Path,
) -> None:
    bus, log = events
    crasher = workers.spawn("w3", FAXBOX_TEST_CRASH_AT="transmitter.before_ack")
    await workers.ready("w3")
    number = "+12125550104"
    request = await fax_request(store, faxbox, three_pages, number, pages=3)
    await bus.publish(request)
    await eventually(lambda: crasher.poll() is not None, 90, "the hook's exit")
    assert crasher.returncode == TEST_CRASH_EXIT_CODE
    (first,) = await log.wait_for(FaxSent, request.fax_id)

    workers.spawn("w4")
    await workers.ready("w4")
    again = await log.wait_for(FaxSent, request.fax_id, count=2, within_s=60)
    assert again[1].message_id == first.message_id
    assert again[1] == first
    assert far_end.invites[number] == 1
    assert len(far_end.complete_receptions(number)) == 1
    assert "republishing its FaxSent" in workers.log_of("w4")


async def test_sigterm_with_calls_on_the_line_exits_within_the_grace_period(
    workers: Workers,
    events: tuple[Bus, EventLog],
    store: Store,
    faxbox: Faxbox,
    far_end: FarEnd,
    three_pages: Path,
) -> None:
    # The calls on the line get the grace period; then they are hung up, the process
    # exits, and the broker gives their requests to the next worker: nothing is lost.
    bus, log = events
    grace_s, margin_s = 2.0, 3.0
    loaded = workers.spawn(
        "w5", FAXBOX_SHUTDOWN_GRACE_S=str(grace_s), FAXBOX_SHUTDOWN_MARGIN_S=str(margin_s)
    )
    await workers.ready("w5")
    numbers = ["+12125550105", "+12125550106", "+12125550107"]
    requests = [await fax_request(store, faxbox, three_pages, n, pages=3) for n in numbers]
    for request in requests:
        await bus.publish(request)
    await eventually(lambda: far_end.active == 3, 30, "three faxes on the line")
    started = time.monotonic()
    loaded.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(loaded.wait, grace_s + margin_s + 5)
    took = time.monotonic() - started
    assert took <= grace_s + margin_s + 1, f"exit {code} after {took:.1f}s"
    assert "service stopped" in workers.log_of("w5") or code != 0

    workers.spawn("w6")
    await workers.ready("w6")
    for request in requests:
        (sent,) = await log.wait_for(FaxSent, request.fax_id, within_s=120)
        assert sent.statistics.pages_transferred == 3
        assert sent.attempts == 2
    for number in numbers:
        assert len(far_end.complete_receptions(number)) == 1


async def test_an_overloaded_transmitter_leaves_the_fax_queued_without_an_attempt(
    workers: Workers,
    events: tuple[Bus, EventLog],
    store: Store,
    faxbox: Faxbox,
    far_end: FarEnd,
    three_pages: Path,
) -> None:
    # A bound no loop can keep: this transmitter is overloaded all the time. It must
    # dial nothing, count no attempt and dead-letter nothing, until one that keeps
    # time takes the fax.
    bus, log = events
    workers.spawn("w7", FAXBOX_LOOP_LAG_BOUND_MS="0.001", FAXBOX_OVERLOAD_RETRY_AFTER_S="1")
    await workers.ready("w7")
    number = "+12125550108"
    request = await fax_request(store, faxbox, three_pages, number, pages=3)
    await bus.publish(request)
    await eventually(
        lambda: workers.log_of("w7").count("the fax waits 1s for a call") >= 3,
        30,
        "the request put back three times",
    )
    job = await store.db[JOBS].find_one({"_id": request.fax_id})
    assert job is not None
    assert (job["state"], job.get("attempt", 0)) == ("queued", 0)
    assert far_end.invites[number] == 0
    assert log.of(FaxSent, request.fax_id) == []
    dead = await bus.connection.channel()
    try:
        waiting = await dead.declare_queue(
            bus.topology.dead_letter_queue("transmitter"), passive=True
        )
        assert waiting.declaration_result.message_count == 0
    finally:
        await dead.close()

    workers.procs["w7"].send_signal(signal.SIGTERM)
    workers.spawn("w8")
    await workers.ready("w8")
    (sent,) = await log.wait_for(FaxSent, request.fax_id, within_s=90)
    assert sent.attempts == 1
    assert far_end.invites[number] == 1


async def test_exit_right_after_the_last_confirmation_is_sent_once_with_no_second_call(
    workers: Workers,
    events: tuple[Bus, EventLog],
    store: Store,
    faxbox: Faxbox,
    far_end: FarEnd,
    three_pages: Path,
) -> None:
    bus, log = events
    # Dies once the far end's confirmation of page 3 of 3 is written to the job: before
    # the call ends, before the attempt's outcome is recorded, before the ack.
    point = "transmitter.after_last_confirmation"
    crasher = workers.spawn("w9", FAXBOX_TEST_CRASH_AT=point)
    await workers.ready("w9")
    number = "+12125550109"
    request = await fax_request(store, faxbox, three_pages, number, pages=3)
    await bus.publish(request)
    await eventually(lambda: crasher.poll() is not None, 90, "the hook's exit")
    assert crasher.returncode == crashpoints.EXIT_STATUS[point]
    job = await store.db[JOBS].find_one({"_id": request.fax_id})
    assert job is not None
    assert (job["state"], job["attempt"], job["pages_confirmed"]) == ("in_call", 1, 3)
    assert not log.of(FaxSent, request.fax_id)

    workers.spawn("w10")
    await workers.ready("w10")
    (sent,) = await log.wait_for(FaxSent, request.fax_id, within_s=60)
    assert (sent.attempts, sent.calls, sent.statistics.pages_transferred) == (1, 1, 3)
    assert "every page was confirmed by an earlier call" in workers.log_of("w10")
    job = await store.db[JOBS].find_one({"_id": request.fax_id})
    assert job is not None
    assert (job["state"], job["worker_id"], job["attempt"]) == ("sent", "w10", 2)
    # One call, which delivered the three pages; none after the restart.
    await eventually(lambda: len(far_end.receptions_of(number)) >= 1, 60, "the call's end")
    await asyncio.sleep(2)
    assert far_end.invites[number] == 1
    (reception,) = far_end.receptions_of(number)
    assert reception.outcome.pages_transferred == 3
    assert_pages_identical(three_pages, reception.file, header=True)
    assert len(log.of(FaxSent, request.fax_id)) == 1


async def test_killed_during_a_database_outage_after_the_far_end_confirmed_is_sent_once(
    workers: Workers,
    events: tuple[Bus, EventLog],
    store: Store,
    faxbox: Faxbox,
    far_end: FarEnd,
    three_pages: Path,
    mongo_settings: MongoSettings,
) -> None:
    bus, log = events
    database = urllib.parse.urlsplit(mongo_settings.mongo_url)
    lease = "15"  # the call (about 5 s here) ends before the lost lease would hang it up
    async with cuttable(database.hostname or "127.0.0.1", database.port or 27017) as link:
        url = f"mongodb://127.0.0.1:{link.port}/"
        victim = workers.spawn(
            "w11", FAXBOX_MONGO_URL=url, FAXBOX_TRANSMITTER_LEASE_S=lease
        )  # fmt: skip
        await workers.ready("w11")
        number = "+12125550110"
        request = await fax_request(store, faxbox, three_pages, number, pages=3)
        await bus.publish(request)
        await eventually(lambda: far_end.active == 1, 30, "the fax on the line")
        await link.cut()  # before the first page is confirmed
        # Killed once the job is back in the broker: what this test shows is that the
        # count went with it (a kill before that is the one ordinary redelivery).
        await eventually(
            lambda: "retrying OutboundFaxRequested in 15s" in workers.log_of("w11"),
            60,
            "the job handed back",
        )
        victim.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.wait, 5)
        (reception,) = far_end.receptions_of(number)
        assert reception.outcome.pages_transferred == 3
        job = await store.db[JOBS].find_one({"_id": request.fax_id})
        assert job is not None
        assert (job["state"], job["attempt"], job.get("pages_confirmed", 0)) == ("in_call", 1, 0)

    workers.spawn("w12", FAXBOX_TRANSMITTER_LEASE_S=lease)
    await workers.ready("w12")
    (sent,) = await log.wait_for(FaxSent, request.fax_id, within_s=90)
    assert (sent.attempts, sent.calls, sent.statistics.pages_transferred) == (1, 1, 3)
    assert "came back with 3 page(s) confirmed by attempt 1" in workers.log_of("w12")
    await asyncio.sleep(2)
    assert far_end.invites[number] == 1
    assert len(far_end.complete_receptions(number)) == 1
    assert len(log.of(FaxSent, request.fax_id)) == 1
