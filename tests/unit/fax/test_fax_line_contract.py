"""The fax line's results in the contracts' terms, and its clock."""

from __future__ import annotations

import pytest

from faxbox.fax.line.contract import call_failure, fax_failure, transfer_statistics
from faxbox.fax.line.pace import call_seconds, has_clock, real_seconds
from faxbox.fax.outcome import FailureClass as EngineClass
from faxbox.fax.outcome import FaxOutcome
from faxbox.fax.sip.ua import CallFailed
from faxbox.shared.contracts import FailureClass


def outcome(success: bool, pages: int, cls: EngineClass | None = None, code: int = 0) -> FaxOutcome:
    return FaxOutcome(
        role="send",
        success=success,
        completion_code=code,
        completion_name="X",
        completion_text="x",
        failure_class=cls,
        message="The telephone call was cut off before the fax finished.",
        hint="",
        pages_transferred=pages,
        pages_in_file=3,
        bit_rate=14400,
        ecm=True,
        x_resolution=8031,
        y_resolution=7700,
        remote_id="FAR",
        pages=[],
    )


def test_a_fax_that_went_through_has_no_failure() -> None:
    assert fax_failure(outcome(True, 3)) is None
    assert fax_failure(outcome(True, 3), pages_expected=3) is None


def test_t30_ok_with_pages_missing_is_a_protocol_failure() -> None:
    failure = fax_failure(outcome(True, 2), pages_expected=3)
    assert failure is not None
    assert failure.failure_class is FailureClass.protocol
    assert (failure.code, failure.text) == (0, "Only 2 of 3 pages were accepted.")


@pytest.mark.parametrize(
    ("engine", "contract"),
    [
        (EngineClass.LINE, FailureClass.line),
        (EngineClass.PROTOCOL, FailureClass.protocol),
        (EngineClass.DOCUMENT, FailureClass.document),
        (None, FailureClass.protocol),
    ],
)
def test_engine_classes_map_to_contract_classes(
    engine: EngineClass | None, contract: FailureClass
) -> None:
    failure = fax_failure(outcome(False, 1, engine, 49))
    assert failure is not None
    assert failure.failure_class is contract
    assert failure.code == 49
    assert failure.text == "The telephone call was cut off before the fax finished."
    assert failure.sip_status is None


def test_a_call_that_never_connected_is_a_line_failure_with_the_sip_status() -> None:
    failure = call_failure(CallFailed(486, "Busy Here"))
    assert (failure.failure_class, failure.code, failure.sip_status) == (
        FailureClass.line,
        -486,
        486,
    )
    assert failure.text == "The line was busy."
    assert call_failure(CallFailed(599, "Odd")).text == "The call could not be placed."


def test_statistics_carry_the_engine_figures_and_the_call_time() -> None:
    stats = transfer_statistics(outcome(True, 2), pages_total=3, duration_s=61.23456)
    assert (stats.pages_transferred, stats.pages_total) == (2, 3)
    assert (stats.bit_rate, stats.ecm, stats.remote_station_id) == (14400, True, "FAR")
    assert (stats.x_resolution, stats.y_resolution) == (8031, 7700)
    assert stats.duration_s == 61.235


def test_call_time_and_real_time() -> None:
    assert real_seconds(60, 20) == 3
    assert call_seconds(3, 20) == 60
    assert real_seconds(60, 1) == call_seconds(60, 1) == 60
    # Unpaced lock-step has no clock: the two are taken as equal, and no T.38.
    assert real_seconds(60, 0) == call_seconds(60, 0) == 60
    assert not has_clock(0)
    assert has_clock(0.5)
