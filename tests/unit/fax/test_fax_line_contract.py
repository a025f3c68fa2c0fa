"""The fax line's results in the contracts' terms, and its clock."""

from __future__ import annotations

import pytest

from faxbox.fax.line.contract import (
    call_failure,
    failure_reason,
    fax_failure,
    page_report,
    transfer_statistics,
)
from faxbox.fax.line.pace import call_seconds, has_clock, real_seconds
from faxbox.fax.outcome import CODES, FaxOutcome, PageStats
from faxbox.fax.outcome import FailureClass as EngineClass
from faxbox.fax.sip.ua import CallFailed
from faxbox.shared.contracts import FailureClass, FailureReason


def outcome(
    success: bool,
    pages: int,
    cls: EngineClass | None = None,
    code: int = 0,
    *,
    name: str = "X",
    role: str = "send",
    page_stats: list[PageStats] | None = None,
) -> FaxOutcome:
    return FaxOutcome(
        role=role,
        success=success,
        completion_code=code,
        completion_name=name,
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
        pages=page_stats or [],
    )


def stats(page: int, result: str, *, bit_rate: int = 14400, bad_rows: int = 0) -> PageStats:
    return PageStats(
        page=page,
        result=result,
        bit_rate=bit_rate,
        ecm=True,
        x_resolution=8031,
        y_resolution=7700,
        width=1728,
        length=2292,
        image_size=41_000 + page,
        encoding=3,
        bad_rows=bad_rows,
        longest_bad_row_run=0,
        ecm_retries=page - 1,
    )


def test_a_fax_that_went_through_has_no_failure() -> None:
    assert fax_failure(outcome(True, 3)) is None
    assert fax_failure(outcome(True, 3), pages_expected=3) is None


def test_t30_ok_with_pages_missing_is_a_protocol_failure() -> None:
    failure = fax_failure(outcome(True, 2), pages_expected=3)
    assert failure is not None
    assert failure.failure_class is FailureClass.protocol
    assert (failure.code, failure.text) == (0, "Only 2 of 3 pages were accepted.")
    assert failure.reason is FailureReason.pages_not_confirmed


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


@pytest.mark.parametrize(
    ("name", "role", "reason"),
    [
        ("T30_ERR_T0_EXPIRED", "send", FailureReason.receiver_not_fax),
        ("T30_ERR_TX_PHDDEAD", "send", FailureReason.receiver_no_response),
        ("T30_ERR_CALLDROPPED", "send", FailureReason.call_dropped),
        ("T30_ERR_CANNOT_TRAIN", "send", FailureReason.training_failed),
        ("T30_ERR_NOSIZESUPPORT", "send", FailureReason.receiver_incompatible),
        ("T30_ERR_FILEERROR", "send", FailureReason.document_unreadable),
        ("T30_ERR_TX_ECMPHD", "send", FailureReason.protocol_error),
        ("T30_ERR_T0_EXPIRED", "receive", FailureReason.sender_not_fax),
        ("T30_ERR_RX_DCNFAX", "receive", FailureReason.call_dropped),
        ("T30_ERR_RX_T2EXPMPS", "receive", FailureReason.sender_no_response),
    ],
)
def test_t30_codes_have_stable_reasons(name: str, role: str, reason: FailureReason) -> None:
    info = next(c for c in CODES.values() if c.name == name)
    ended = outcome(False, 0, info.failure_class, info.code, name=name, role=role)
    assert failure_reason(ended) is reason
    failure = fax_failure(ended)
    assert failure is not None
    assert failure.reason is reason


def test_every_t30_failure_code_has_a_reason_both_ways() -> None:
    for info in CODES.values():
        if info.failure_class is None:
            continue
        for role in ("send", "receive"):
            ended = outcome(False, 0, info.failure_class, info.code, name=info.name, role=role)
            assert failure_reason(ended) in set(FailureReason), (info.name, role)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (486, FailureReason.user_busy),
        (480, FailureReason.no_answer),
        (404, FailureReason.invalid_number),
        (503, FailureReason.network_unavailable),
        (603, FailureReason.call_rejected),
        (599, FailureReason.call_failed),
    ],
)
def test_sip_failures_have_stable_reasons(status: int, reason: FailureReason) -> None:
    assert call_failure(CallFailed(status, "x")).reason is reason


def test_page_report_keeps_each_pages_last_transmission() -> None:
    # Page 2 was answered RTN, retrained and sent again (MCF); page 3 was cut off.
    ended = outcome(
        False,
        2,
        EngineClass.LINE,
        49,
        name="T30_ERR_CALLDROPPED",
        page_stats=[stats(1, "MCF"), stats(2, "RTN", bit_rate=9600), stats(2, "MCF")],
    )
    report = page_report(ended)
    assert [(p.page, p.confirmed, p.result, p.transmissions) for p in report] == [
        (1, True, "MCF", 1),
        (2, True, "MCF", 2),
    ]
    assert report[1].bit_rate == 14400  # the retrained transmission's
    assert (report[0].encoding, report[0].image_bytes, report[1].ecm_retries) == ("T.6", 41_001, 1)


def test_page_report_counts_in_the_whole_document() -> None:
    ended = outcome(True, 2, page_stats=[stats(1, "MCF"), stats(2, "PIN")])
    assert [(p.page, p.confirmed) for p in page_report(ended, first_page=3)] == [
        (3, True),
        (4, False),
    ]


def test_received_pages_are_confirmed_when_they_arrived() -> None:
    ended = outcome(
        False,
        1,
        EngineClass.LINE,
        49,
        name="T30_ERR_CALLDROPPED",
        role="receive",
        page_stats=[stats(1, "MPS"), stats(2, "MPS", bad_rows=40)],
    )
    report = page_report(ended)
    assert [(p.page, p.confirmed, p.result, p.bad_rows) for p in report] == [
        (1, True, "MPS", 0),
        (2, False, "MPS", 40),
    ]
