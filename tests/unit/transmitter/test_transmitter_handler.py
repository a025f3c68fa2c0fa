"""The transmitter's handler against fakes of its own ports: ledger, redial, carrier choice."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from pymongo.errors import AutoReconnect

from faxbox.fax.outcome import FailureClass as EngineClass
from faxbox.fax.outcome import FaxOutcome
from faxbox.fax.session import Compression, Modem
from faxbox.fax.sip.carrier import carrier_uri
from faxbox.fax.sip.ua import CallFailed
from faxbox.shared.bus import RetryLater
from faxbox.shared.contracts import (
    FailureClass,
    FaxAttemptFailed,
    FaxAttemptStarted,
    FaxFailed,
    FaxSent,
)
from faxbox.shared.policy import is_infrastructure
from faxbox.transmitter.carriers import Slot, eligible_carriers
from faxbox.transmitter.handlers import NO_RESOURCES, utc_now
from faxbox.transmitter.jobs import Job, JobState
from faxbox.transmitter.line import (
    CallReport,
    Dial,
    call_settings,
    report_from_outcome,
    sip_failure,
)
from tests.unit.transmitter.transmitter_fakes import (
    Clock,
    FakeDocuments,
    FakeLedger,
    FakeLine,
    FakeSlots,
    carrier,
    failed_report,
    request,
    sent_report,
    transmitter,
)

# --- carrier choice --------------------------------------------------------------------


def test_only_fax_carriers_whose_require_flags_the_call_carries_in_priority_order() -> None:
    plain = carrier("plain", priority=50)
    cheap = carrier("cheap", priority=10)
    premium = carrier("premium", priority=1, require_flags=["premium"])
    both = carrier("both", priority=5, require_flags=["premium", "intl"])
    voice = carrier("voice", flags=["voice"])
    capped = carrier("capped", channel_cap=0)
    nowhere = carrier("nowhere", sip_host=None, sip_port=None)
    every = [plain, cheap, premium, both, voice, capped, nowhere]
    assert eligible_carriers(every, []) == [cheap, plain]
    assert eligible_carriers(every, ["premium"]) == [premium, cheap, plain]
    assert eligible_carriers(every, ["premium", "intl"]) == [premium, both, cheap, plain]
    assert eligible_carriers([voice, premium], []) == []


def test_carrier_uri_from_host_and_port() -> None:
    assert carrier_uri(carrier(sip_host="10.0.0.1", sip_port=None)) == "sip:10.0.0.1:5060"
    assert carrier_uri(carrier(sip_host=None, sip_uri="sip:trunk.example:5080")) == (
        "sip:trunk.example:5080"
    )


# --- outcomes --------------------------------------------------------------------------


def _dial(tmp_path: Path, degrade: int) -> Dial:
    return Dial("fax_1", "+12125550100", None, carrier(), tmp_path / "x.tif", 1, degrade=degrade)


def test_protocol_fallback_turns_ecm_off_then_slows_the_modem(tmp_path: Path) -> None:
    first = call_settings(_dial(tmp_path, 0))
    assert first.ecm
    assert Modem.V17 in first.modems
    assert Compression.T6 in first.compressions
    second = call_settings(_dial(tmp_path, 1))
    assert not second.ecm
    assert Compression.T6 not in second.compressions
    assert Modem.V17 in second.modems
    third = call_settings(_dial(tmp_path, 2))
    assert third.modems == {Modem.V29, Modem.V27TER}
    assert call_settings(_dial(tmp_path, 5)).modems == {Modem.V27TER}


@pytest.mark.parametrize(
    ("status", "text", "retryable"),
    [
        (486, "The line was busy.", True),
        (408, "Nobody answered the call.", True),
        (603, "The call was refused by the telephone network.", True),
        (503, "The telephone network could not place the call right now.", True),
        (404, "The number does not exist or cannot be reached.", False),
    ],
)
def test_sip_failures_are_line_failures(status: int, text: str, retryable: bool) -> None:
    report = sip_failure(CallFailed(status, "x"))
    assert report.failure is not None
    assert report.failure.failure_class is FailureClass.line
    assert (report.failure.code, report.failure.sip_status) == (-status, status)
    assert report.failure.text == text
    assert report.retryable is retryable


def _outcome(success: bool, pages: int, cls: EngineClass | None, code: int) -> FaxOutcome:
    return FaxOutcome(
        role="send",
        success=success,
        completion_code=code,
        completion_name="X",
        completion_text="x",
        failure_class=cls,
        message="The receiving fax machine hung up after we sent a page.",
        hint="",
        pages_transferred=pages,
        pages_in_file=3,
        bit_rate=9600,
        ecm=False,
        x_resolution=8031,
        y_resolution=3850,
        remote_id="FAR",
        pages=[],
    )


def test_an_outcome_is_sent_only_when_every_page_went() -> None:
    ok = report_from_outcome(_outcome(True, 3, None, 0), pages_total=3, duration_s=1, media="t38")
    assert ok.success
    assert ok.statistics is not None
    assert ok.statistics.remote_station_id == "FAR"
    short = report_from_outcome(_outcome(True, 2, None, 0), pages_total=3, duration_s=1, media="x")
    assert short.failure is not None
    assert "2 of 3" in short.failure.text
    dropped = report_from_outcome(
        _outcome(False, 1, EngineClass.PROTOCOL, 21), pages_total=3, duration_s=1, media="audio"
    )
    assert dropped.failure is not None
    assert dropped.failure.failure_class is FailureClass.protocol
    assert (dropped.pages_sent, dropped.failure.code) == (1, 21)


# --- the handler: ledger ---------------------------------------------------------------


async def test_sent_once_and_a_redelivery_republishes_the_same_fax_sent(tmp_path: Path) -> None:
    line = FakeLine(sent_report())
    t = transmitter(tmp_path, line)
    bus = t.bus
    await t.handle(request())
    (sent,) = bus.of(FaxSent)
    assert (sent.attempts, sent.carrier_id, sent.statistics.pages_transferred) == (1, "car_c1", 2)
    # The headed TIFF this call sent, kept for the attempt.
    assert sent.transmitted_tiff == await cast(FakeDocuments, t.deps.documents).find(
        "acc1", "202611", "fax_1", "transmitted#1"
    )
    await t.handle(request())
    again = bus.of(FaxSent)
    assert len(again) == 2
    assert again[1] == sent
    assert len(line.dials) == 1
    slots = cast(FakeSlots, t.deps.slots)
    assert not slots.held
    assert slots.released == ["car_c1:0"]


async def test_a_job_on_a_live_lease_is_left_alone_then_resumed_when_it_expires(
    tmp_path: Path,
) -> None:
    ledger, clock = FakeLedger(), Clock()
    # Worker w0 claimed the job and then went silent.
    await ledger.ensure("fax_1", clock())
    await ledger.claim("fax_1", "w0", clock(), 60)
    line = FakeLine(sent_report())
    t = transmitter(tmp_path, line, ledger=ledger, clock=clock)
    clock.advance(20)
    with pytest.raises(RetryLater) as later:
        await t.handle(request())
    assert later.value.delay_s == 41
    assert not line.dials
    clock.advance(41)
    await t.handle(request())
    assert len(line.dials) == 1
    job = ledger.jobs["fax_1"]
    assert (job.state, job.attempt, job.worker_id) == (JobState.SENT, 2, "w1")
    (sent,) = t.bus.of(FaxSent)
    assert sent.attempts == 2


async def test_a_copy_arriving_before_the_redial_is_due_waits(tmp_path: Path) -> None:
    clock = Clock()
    line = FakeLine(failed_report("line", -486, sip=486), sent_report())
    t = transmitter(tmp_path, line, clock=clock)
    with pytest.raises(RetryLater) as first:
        await t.handle(request())
    assert first.value.delay_s == 120
    clock.advance(30)
    with pytest.raises(RetryLater) as early:
        await t.handle(request())
    assert early.value.delay_s == 90
    assert len(line.dials) == 1
    clock.advance(90)
    await t.handle(request())
    assert len(line.dials) == 2


async def test_an_unconfirmed_attempt_failed_event_is_published_on_the_next_delivery(
    tmp_path: Path,
) -> None:
    clock, ledger = Clock(), FakeLedger()
    line = FakeLine(failed_report("line", -486, sip=486))
    t = transmitter(tmp_path, line, clock=clock, ledger=ledger)
    with pytest.raises(RetryLater):
        await t.handle(request())
    # As if the process died between recording the attempt's outcome and its publish.
    bus = t.bus
    bus.published.clear()
    t.decisions.owed_since["fax_1#1"] = clock()
    with pytest.raises(RetryLater):
        await t.handle(request())
    (event,) = bus.of(FaxAttemptFailed)
    assert event.attempt == 1
    assert "fax_1#1" not in t.decisions.owed_since


# --- the handler: redial by failure class ------------------------------------------------


async def test_line_failures_redial_after_the_policy_delays_then_fail(tmp_path: Path) -> None:
    clock = Clock()
    busy = failed_report("line", -486, sip=486)
    line = FakeLine(busy, busy, busy)
    t = transmitter(tmp_path, line, clock=clock)
    bus = t.bus
    delays = []
    for _ in range(2):
        with pytest.raises(RetryLater) as later:
            await t.handle(request())
        delays.append(later.value.delay_s)
        clock.advance(later.value.delay_s)
    await t.handle(request())
    assert delays == [120, 300]
    attempts = bus.of(FaxAttemptFailed)
    assert [(a.attempt, a.attempts_allowed) for a in attempts] == [(1, 3), (2, 3), (3, 3)]
    assert [a.next_attempt_at is None for a in attempts] == [False, False, True]
    (failed,) = bus.of(FaxFailed)
    assert (failed.attempts, failed.failure.failure_class) == (3, FailureClass.line)
    assert failed.failure.sip_status == 486


async def test_next_attempt_at_is_when_the_redial_is_due(tmp_path: Path) -> None:
    clock = Clock()
    line = FakeLine(failed_report("line", -408, sip=408))
    t = transmitter(tmp_path, line, clock=clock)
    with pytest.raises(RetryLater):
        await t.handle(request())
    (event,) = t.bus.of(FaxAttemptFailed)
    assert event.next_attempt_at == clock() + timedelta(seconds=120)


async def test_protocol_failures_redial_with_ecm_off_then_a_slower_modem(tmp_path: Path) -> None:
    clock = Clock()
    broken = failed_report("protocol", 21, pages=1)
    line = FakeLine(broken, broken, sent_report())
    t = transmitter(tmp_path, line, clock=clock)
    for _ in range(2):
        with pytest.raises(RetryLater) as later:
            await t.handle(request())
        clock.advance(later.value.delay_s)
    await t.handle(request())
    assert [dial.degrade for dial in line.dials] == [0, 1, 2]
    (event, _) = t.bus.of(FaxAttemptFailed)
    assert event.pages_sent == 1


@pytest.mark.parametrize(
    "report",
    [failed_report("document", 12), failed_report("line", -404, sip=404, retryable=False)],
)
async def test_document_failures_and_bad_numbers_fail_at_once(
    tmp_path: Path, report: CallReport
) -> None:
    line = FakeLine(report)
    t = transmitter(tmp_path, line)
    await t.handle(request())
    (failed,) = t.bus.of(FaxFailed)
    assert failed.attempts == 1
    (last,) = t.bus.of(FaxAttemptFailed)
    assert (last.attempt, last.next_attempt_at) == (1, None)


async def test_a_bad_tiff_fails_before_any_call(tmp_path: Path) -> None:
    line = FakeLine()
    t = transmitter(tmp_path, line)
    await t.handle(request("narrow"))
    (failed,) = t.bus.of(FaxFailed)
    assert failed.failure.failure_class is FailureClass.document
    assert "1728" in failed.failure.text
    assert (failed.attempts, failed.pages_sent, failed.pages_total) == (0, 0, 2)
    assert not line.dials


async def test_a_missing_document_fails_as_a_document_problem(tmp_path: Path) -> None:
    t = transmitter(tmp_path, FakeLine())
    await t.handle(request("gone"))
    (failed,) = t.bus.of(FaxFailed)
    assert failed.failure.failure_class is FailureClass.document


# --- the handler: carriers and channels ------------------------------------------------


async def test_no_eligible_carrier_is_no_available_resources(tmp_path: Path) -> None:
    line = FakeLine()
    t = transmitter(tmp_path, line, carriers=[carrier(require_flags=["premium"])])
    await t.handle(request())
    (failed,) = t.bus.of(FaxFailed)
    assert failed.failure.failure_class is FailureClass.resources
    assert failed.failure.text == NO_RESOURCES
    assert not line.dials


async def test_route_flags_open_carriers_that_require_them(tmp_path: Path) -> None:
    line = FakeLine(sent_report())
    premium = carrier("premium", require_flags=["premium"])
    t = transmitter(tmp_path, line, carriers=[premium])
    await t.handle(request(route_flags=("premium",)))
    assert line.dials[0].carrier == premium


async def test_every_channel_busy_waits_without_using_an_attempt(tmp_path: Path) -> None:
    clock, slots = Clock(), FakeSlots()
    only = carrier(channel_cap=1)
    slots.held[f"{only.id}:0"] = ("other", clock() + timedelta(seconds=60))
    line = FakeLine(sent_report())
    t = transmitter(tmp_path, line, carriers=[only], slots=slots, clock=clock)
    with pytest.raises(RetryLater) as later:
        await t.handle(request())
    assert later.value.delay_s == 15
    ledger = cast(FakeLedger, t.deps.ledger)
    assert ledger.jobs["fax_1"].attempt == 0
    clock.advance(61)  # the other call's channel lease ran out
    await t.handle(request())
    (sent,) = t.bus.of(FaxSent)
    assert sent.attempts == 1


async def test_busy_for_too_long_is_no_available_resources(tmp_path: Path) -> None:
    clock, slots = Clock(), FakeSlots()
    only = carrier(channel_cap=1)
    t = transmitter(tmp_path, FakeLine(), carriers=[only], slots=slots, clock=clock)
    for _ in range(3):
        slots.held[f"{only.id}:0"] = ("other", clock() + timedelta(seconds=3600))
        try:
            await t.handle(request())
        except RetryLater as later:
            clock.advance(max(later.delay_s, 400))
    (failed,) = t.bus.of(FaxFailed)
    assert failed.failure.text == NO_RESOURCES


async def test_losing_the_lease_mid_call_hangs_up_and_publishes_nothing(tmp_path: Path) -> None:
    ledger = FakeLedger()
    hung_up = asyncio.Event()

    async def endless(_dial: Dial) -> CallReport:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            hung_up.set()
            raise
        raise AssertionError("not reached")

    t = transmitter(tmp_path, FakeLine(endless), ledger=ledger, lease_s=0.6)
    ledger.renew_fails = True
    await asyncio.wait_for(t.handle(request()), 5)
    assert hung_up.is_set()
    # The call was announced; nothing about how it ended.
    assert [type(m) for m in t.bus.published] == [FaxAttemptStarted]
    assert not cast(FakeSlots, t.deps.slots).held


async def test_no_contact_with_the_ledger_mid_call_hangs_up_and_keeps_the_message(
    tmp_path: Path,
) -> None:
    ledger = FakeLedger()
    hung_up = asyncio.Event()

    async def endless(_dial: Dial) -> CallReport:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            hung_up.set()
            raise
        raise AssertionError("not reached")

    t = transmitter(tmp_path, FakeLine(endless), ledger=ledger, lease_s=0.9, clock=utc_now)
    ledger.renew_raises = AutoReconnect("database away")
    with pytest.raises(RetryLater):
        await asyncio.wait_for(t.handle(request()), 5)
    assert hung_up.is_set()
    assert [type(m) for m in t.bus.published] == [FaxAttemptStarted]


async def test_a_database_blip_after_the_call_is_waited_out_not_redialled(
    tmp_path: Path,
) -> None:
    ledger = FakeLedger()
    ledger.finish_raises = [AutoReconnect("away"), AutoReconnect("still away")]
    line = FakeLine(sent_report())
    t = transmitter(tmp_path, line, ledger=ledger)
    await t.handle(request())
    assert ledger.jobs["fax_1"].state is JobState.SENT
    assert len(t.bus.of(FaxSent)) == 1
    assert len(line.dials) == 1


async def test_a_channel_release_failing_after_the_call_does_not_lose_its_outcome(
    tmp_path: Path,
) -> None:
    # Found by the chaos test: FerretDB killed as a call ended; the slot release raised,
    # the outcome was never recorded, and the fax went out again on the redelivery.
    class DownSlots(FakeSlots):
        async def release(self, slot: Slot) -> None:
            raise AutoReconnect("database away")

    line = FakeLine(sent_report())
    ledger = FakeLedger()
    t = transmitter(tmp_path, line, ledger=ledger, slots=DownSlots())
    await t.handle(request())
    assert ledger.jobs["fax_1"].state is JobState.SENT
    assert len(t.bus.of(FaxSent)) == 1
    await t.handle(request())
    assert len(line.dials) == 1


async def test_database_trouble_before_the_call_is_a_retry_later(tmp_path: Path) -> None:
    class DownLedger(FakeLedger):
        async def ensure(self, fax_id: str, now: datetime, request_json: str | None = None) -> Job:
            raise AutoReconnect("database away")

    t = transmitter(tmp_path, FakeLine(), ledger=DownLedger())
    # Database trouble propagates; the settling policy waits the outage out.
    with pytest.raises(AutoReconnect) as later:
        await t.handle(request())
    assert is_infrastructure(later.value)


async def test_a_worker_dying_between_the_outcome_and_the_job_is_never_redialled(
    tmp_path: Path,
) -> None:
    clock, ledger = Clock(), FakeLedger()
    line = FakeLine(sent_report())
    first = transmitter(tmp_path, line, ledger=ledger, clock=clock, worker_id="w1")
    ledger.finish_raises = [RuntimeError("killed before ending the attempt")]
    with pytest.raises(RuntimeError, match="killed"):
        await first.handle(request())
    stuck = ledger.jobs["fax_1"]
    assert stuck.state is JobState.IN_CALL
    assert [type(m) for m in first.bus.published] == [FaxAttemptStarted]  # nothing more
    clock.advance(61)  # its lease ran out
    second = transmitter(
        tmp_path, line, ledger=ledger, decisions=first.decisions, clock=clock, worker_id="w2"
    )
    await second.handle(request())
    assert len(line.dials) == 1
    assert ledger.jobs["fax_1"].state is JobState.SENT
    (sent,) = second.bus.of(FaxSent)
    assert sent.attempts == 1


# --- the handler: carrier failover -----------------------------------------------------


def carrier_trouble(status: int, retry_after: int | None = None) -> CallReport:
    return dataclasses.replace(
        failed_report("line", -status, sip=status),
        carrier_trouble=True,
        retry_after_s=retry_after,
    )


async def test_a_failing_carrier_hands_the_call_to_the_next_within_the_attempt(
    tmp_path: Path,
) -> None:
    first, second = carrier("first", priority=1), carrier("second", priority=2)
    line = FakeLine(carrier_trouble(503), sent_report())
    t = transmitter(tmp_path, line, carriers=[second, first])
    await t.handle(request())
    assert [dial.carrier.name for dial in line.dials] == ["first", "second"]
    (tried,) = t.bus.of(FaxAttemptFailed)
    assert tried.carrier_failover
    assert (tried.carrier_id, tried.attempt, tried.failure.sip_status) == (first.id, 1, 503)
    (sent,) = t.bus.of(FaxSent)
    assert (sent.carrier_id, sent.attempts) == (second.id, 1)
    # The carriers tried are part of the attempt's one recorded outcome, before its end.
    assert [type(m) for m in t.bus.published] == [
        FaxAttemptStarted,  # once per attempt, before the first carrier is dialled
        FaxAttemptFailed,
        FaxSent,
    ]


async def test_failover_is_bounded_and_the_last_failure_is_the_attempts(tmp_path: Path) -> None:
    carriers = [carrier(f"c{n}", priority=n) for n in range(5)]
    line = FakeLine(*(carrier_trouble(500) for _ in range(5)))
    ledger = FakeLedger()
    t = transmitter(tmp_path, line, carriers=carriers, ledger=ledger)
    t.deps = dataclasses.replace(t.deps, max_carrier_tries=3)
    with pytest.raises(RetryLater):
        await t.handle(request())
    assert [dial.carrier.name for dial in line.dials] == ["c0", "c1", "c2"]
    events = t.bus.of(FaxAttemptFailed)
    assert [e.carrier_failover for e in events] == [True, True, False]
    job = ledger.jobs["fax_1"]
    assert job.state is JobState.WAITING_RETRY
    assert job.failed_attempts == 1


async def test_a_recorded_failover_outcome_ends_the_job_by_its_last_carrier(
    tmp_path: Path,
) -> None:
    first, second = carrier("first", priority=1), carrier("second", priority=2)
    line = FakeLine(carrier_trouble(503), failed_report("line", -486, sip=486))
    clock, ledger = Clock(), FakeLedger()
    t = transmitter(tmp_path, line, carriers=[first, second], ledger=ledger, clock=clock)
    ledger.finish_raises = [RuntimeError("killed before ending the attempt")]
    with pytest.raises(RuntimeError, match="killed"):
        await t.handle(request())
    clock.advance(61)  # its lease ran out; the next copy ends the job as recorded
    again = transmitter(
        tmp_path, line, ledger=ledger, decisions=t.decisions, clock=clock, worker_id="w2"
    )
    with pytest.raises(RetryLater):
        await again.handle(request())
    job = ledger.jobs["fax_1"]
    assert job.state is JobState.WAITING_RETRY
    assert job.last_outcome is not None
    assert (job.last_outcome["carrier_id"], job.last_outcome["code"]) == (second.id, -486)
    assert len(line.dials) == 2


async def test_a_busy_number_is_not_tried_on_another_carrier(tmp_path: Path) -> None:
    line = FakeLine(failed_report("line", -486, sip=486), sent_report())
    t = transmitter(tmp_path, line, carriers=[carrier("a", priority=1), carrier("b", priority=2)])
    with pytest.raises(RetryLater):
        await t.handle(request())
    assert [dial.carrier.name for dial in line.dials] == ["a"]


async def test_retry_after_keeps_a_carrier_out_until_then(tmp_path: Path) -> None:
    clock = Clock()
    first, second = carrier("first", priority=1), carrier("second", priority=2)
    line = FakeLine(carrier_trouble(503, retry_after=120), sent_report(), sent_report())
    t = transmitter(tmp_path, line, carriers=[first, second], clock=clock)
    await t.handle(request(fax_id="fax_a"))
    clock.advance(60)
    await t.handle(request(fax_id="fax_b"))  # first is still cooling down
    clock.advance(61)
    line.script.append(sent_report())
    await t.handle(request(fax_id="fax_c"))
    assert [dial.carrier.name for dial in line.dials] == ["first", "second", "second", "first"]
