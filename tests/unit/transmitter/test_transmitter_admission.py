"""Admission control: an overloaded transmitter starts no call and counts no attempt."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import cast

import pytest

from faxbox.shared.bus import RetryLater
from faxbox.shared.contracts import FaxAttemptStarted, FaxSent
from faxbox.shared.policy import Attempts, Retry, decide
from faxbox.shared.settings import BrokerSettings
from faxbox.transmitter.jobs import JobState
from tests.unit.transmitter.transmitter_fakes import FakeLedger, FakeLine, request, sent_report
from tests.unit.transmitter.transmitter_fakes import transmitter as make_transmitter


class Load:
    def __init__(self) -> None:
        self.lag_ms: float | None = 850.0

    def overloaded(self, bound_ms: float | None = None) -> float | None:
        return self.lag_ms


async def test_a_late_loop_puts_the_job_back_unclaimed_then_it_is_sent(tmp_path: Path) -> None:
    load, line = Load(), FakeLine(sent_report())
    t = make_transmitter(tmp_path, line)
    t.deps = dataclasses.replace(t.deps, load=load, overload_retry_s=7)
    with pytest.raises(RetryLater) as later:
        await t.handle(request())
    assert later.value.delay_s == 7
    assert "850 ms" in later.value.reason
    job = cast(FakeLedger, t.deps.ledger).jobs["fax_1"]
    assert (job.state, job.attempt, job.failed_attempts) == (JobState.QUEUED, 0, 0)
    assert line.dials == []
    assert t.bus.published == []
    # The settling policy parks it for the delay without using its retry budget.
    decision = decide(later.value, Attempts(transient=4, waits=2), BrokerSettings())
    assert decision == Retry(later.value.reason, 10, Attempts(4, 2), "scheduled")

    load.lag_ms = None
    await t.handle(request())
    (sent,) = t.bus.of(FaxSent)
    assert sent.attempts == 1
    assert len(t.bus.of(FaxAttemptStarted)) == 1


async def test_a_job_already_decided_is_answered_even_while_overloaded(tmp_path: Path) -> None:
    load, line = Load(), FakeLine(sent_report())
    t = make_transmitter(tmp_path, line)
    await t.handle(request())
    t.deps = dataclasses.replace(t.deps, load=load)
    await t.handle(request())  # a redelivered copy: its outcome is republished, no call
    assert len(t.bus.of(FaxSent)) == 2
    assert len(line.dials) == 1


async def test_a_process_at_its_bound_of_calls_puts_the_job_back_unclaimed(
    tmp_path: Path,
) -> None:
    line = FakeLine(sent_report())
    t = make_transmitter(tmp_path, line)
    t.deps = dataclasses.replace(t.deps, admit_calls=1, overload_retry_s=7)
    # One call on the line already.
    with t.deps.admitted.holding(), pytest.raises(RetryLater) as later:
        await t.handle(request())
    assert later.value.delay_s == 7
    assert "1 calls admitted" in later.value.reason
    job = cast(FakeLedger, t.deps.ledger).jobs["fax_1"]
    assert (job.state, job.attempt) == (JobState.QUEUED, 0)
    assert line.dials == []

    await t.handle(request())  # that call ended: this one goes out
    assert len(t.bus.of(FaxSent)) == 1
    assert t.deps.admitted.count == 0  # the attempt freed its place again
