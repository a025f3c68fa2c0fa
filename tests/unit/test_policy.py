"""The settling policy: one rule for every consumer (faxbox.shared.policy)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiormq.exceptions import AMQPConnectionError
from pymongo.errors import AutoReconnect, DuplicateKeyError, OperationFailure

from faxbox.shared.policy import (
    RETRY_LADDER_S,
    Ack,
    Attempts,
    DeadLetter,
    PermanentError,
    Retry,
    RetryLater,
    TransientError,
    decide,
    is_infrastructure,
    on_ladder,
)


@dataclass(frozen=True)
class Settings:
    retry_delays_s: tuple[int, ...] = (5, 30, 120)
    max_transient_attempts: int = 5
    infrastructure_backoff_max_s: int = 60


S = Settings()


def test_a_returned_handler_is_acked() -> None:
    assert decide(None, Attempts(), S) == Ack()


def test_a_permanent_error_is_dead_lettered_with_its_reason() -> None:
    decision = decide(PermanentError("sender unknown"), Attempts(transient=1), S)
    assert decision == DeadLetter("sender unknown", "permanent")


def test_a_bug_is_retried_along_the_delays_then_dead_lettered_as_exhausted() -> None:
    delays = []
    attempts = Attempts()
    while True:
        decision = decide(RuntimeError("boom"), attempts, S)
        if not isinstance(decision, Retry):
            break
        assert decision.kind == "transient"
        delays.append(decision.delay_s)
        attempts = decision.next
    assert delays == [5, 30, 120, 120]
    assert decision == DeadLetter("gave up after 5 attempts: RuntimeError: boom", "exhausted")


@pytest.mark.parametrize(
    "outage",
    [
        AutoReconnect("connection refused"),
        AMQPConnectionError("broker gone"),
        ConnectionResetError("reset"),
        TimeoutError("no answer"),
        OperationFailure("shutting down", code=91),
    ],
)
def test_an_outage_is_waited_out_for_ever_with_a_capped_backoff(outage: Exception) -> None:
    attempts = Attempts(transient=5)  # the transient budget is already used up
    delays = []
    for _ in range(40):  # far longer than any budget
        decision = decide(outage, attempts, S)
        assert isinstance(decision, Retry)
        assert decision.kind == "infrastructure"
        delays.append(decision.delay_s)
        attempts = decision.next
    assert delays[:8] == [1, 2, 3, 5, 10, 15, 30, 60]
    assert set(delays[8:]) == {60}
    assert attempts == Attempts(transient=5, waits=40)


def test_an_outage_wrapped_by_the_handler_is_still_an_outage() -> None:
    try:
        try:
            raise AutoReconnect("connection refused")
        except AutoReconnect as exc:
            raise TransientError(f"database write failed: {exc}") from exc
    except TransientError as wrapped:
        decision = decide(wrapped, Attempts(transient=9), S)
    assert isinstance(decision, Retry)
    assert decision.kind == "infrastructure"


def test_errors_that_are_not_outages() -> None:
    assert not is_infrastructure(DuplicateKeyError("E11000"))
    assert not is_infrastructure(OperationFailure("bad query", code=2))
    assert not is_infrastructure(ValueError("x"))
    refused = PermanentError("refused")
    refused.__cause__ = AutoReconnect("x")
    assert not is_infrastructure(refused)  # the handler's own verdict wins


def test_retry_later_keeps_its_schedule_rounded_up_to_the_ladder() -> None:
    decision = decide(RetryLater("redial", 117), Attempts(transient=5, waits=2), S)
    assert decision == Retry("redial", 120, Attempts(transient=5, waits=2), "scheduled")


@pytest.mark.parametrize(
    ("asked", "given"),
    [(0, 1), (1, 1), (3, 3), (4, 5), (45, 60), (121, 300), (86400, 86400), (10**7, 86400)],
)
def test_every_delay_is_a_step_of_the_ladder(asked: int, given: int) -> None:
    assert on_ladder(asked) == given
    assert given in RETRY_LADDER_S


def test_the_ladder_is_short_and_ordered() -> None:
    assert list(RETRY_LADDER_S) == sorted(set(RETRY_LADDER_S))
    assert len(RETRY_LADDER_S) <= 20
