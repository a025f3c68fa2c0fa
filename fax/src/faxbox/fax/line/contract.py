"""How a fax call ended, in the contracts' terms (``faxbox.shared.contracts``).

The engine classes a T.30 failure as line, protocol or document
(``faxbox.fax.outcome``); the contracts use the same three classes, and each failure
also gets its stable reason (``FailureReason``, the API's ``failure_reason``). A call
that never connected is a line failure whose code is the negative SIP status, so it
never clashes with spandsp's completion codes (0 and up). Texts are for the person who
sent or is receiving the fax.

``page_report`` turns the engine's phase D statistics into one ``PageReport`` per page.
"""

from __future__ import annotations

from typing import Final

from faxbox.fax import spandsp
from faxbox.fax.outcome import FailureClass as EngineClass
from faxbox.fax.outcome import FaxOutcome, PageStats
from faxbox.fax.sip.ua import CallFailed, FailureKind
from faxbox.shared.contracts import (
    FailureClass,
    FailureReason,
    FaxFailure,
    PageReport,
    TransferStatistics,
)

_CLASSES = {
    EngineClass.LINE: FailureClass.line,
    EngineClass.PROTOCOL: FailureClass.protocol,
    EngineClass.DOCUMENT: FailureClass.document,
}

_SIP_TEXT: dict[FailureKind, str] = {
    FailureKind.BUSY: "The line was busy.",
    FailureKind.NO_ANSWER: "Nobody answered the call.",
    FailureKind.BAD_NUMBER: "The number does not exist or cannot be reached.",
    FailureKind.UNAVAILABLE: "The telephone network could not place the call right now.",
    FailureKind.REJECTED: "The call was refused by the telephone network.",
    FailureKind.OTHER: "The call could not be placed.",
}

_SIP_REASON: Final[dict[FailureKind, FailureReason]] = {
    FailureKind.BUSY: FailureReason.user_busy,
    FailureKind.NO_ANSWER: FailureReason.no_answer,
    FailureKind.BAD_NUMBER: FailureReason.invalid_number,
    FailureKind.UNAVAILABLE: FailureReason.network_unavailable,
    FailureKind.REJECTED: FailureReason.call_rejected,
    FailureKind.OTHER: FailureReason.call_failed,
}

_R = FailureReason
# T.30 completion codes by name (spandsp/t30.h 0.0.6); a code not named here takes the
# default of its class (_BY_CLASS). Sending and receiving differ where the far end's
# role does: a silent far end is the receiver when we send, the sender when we receive.
_SENDING: Final[dict[str, FailureReason]] = {
    "T30_ERR_CEDTONE": _R.receiver_not_fax,
    "T30_ERR_T0_EXPIRED": _R.receiver_not_fax,
    "T30_ERR_T1_EXPIRED": _R.receiver_not_fax,
    "T30_ERR_RX_INCAPABLE": _R.receiver_not_fax,
    "T30_ERR_T3_EXPIRED": _R.receiver_no_response,
    "T30_ERR_TX_PHBDEAD": _R.receiver_no_response,
    "T30_ERR_TX_PHDDEAD": _R.receiver_no_response,
    "T30_ERR_TX_T5EXP": _R.receiver_no_response,
    "T30_ERR_RETRYDCN": _R.receiver_no_response,
    "T30_ERR_CALLDROPPED": _R.call_dropped,
    "T30_ERR_TX_BADPG": _R.call_dropped,
    "T30_ERR_TX_GOTDCN": _R.call_dropped,
    "T30_ERR_HDLC_CARRIER": _R.training_failed,
    "T30_ERR_CANNOT_TRAIN": _R.training_failed,
    "T30_ERR_INCOMPATIBLE": _R.receiver_incompatible,
    "T30_ERR_NORESSUPPORT": _R.receiver_incompatible,
    "T30_ERR_NOSIZESUPPORT": _R.receiver_incompatible,
    "T30_ERR_TX_INCAPABLE": _R.receiver_incompatible,
    "T30_ERR_IDENT_UNACCEPTABLE": _R.receiver_refused,
    "T30_ERR_SUB_UNACCEPTABLE": _R.receiver_refused,
    "T30_ERR_SID_UNACCEPTABLE": _R.receiver_refused,
    "T30_ERR_PWD_UNACCEPTABLE": _R.receiver_refused,
    "T30_ERR_TSA_UNACCEPTABLE": _R.receiver_refused,
    "T30_ERR_IRA_UNACCEPTABLE": _R.receiver_refused,
    "T30_ERR_CIA_UNACCEPTABLE": _R.receiver_refused,
    "T30_ERR_CSA_UNACCEPTABLE": _R.receiver_refused,
    "T30_ERR_NOMEM": _R.internal_error,
}
_RECEIVING: Final[dict[str, FailureReason]] = {
    "T30_ERR_CEDTONE": _R.sender_not_fax,
    "T30_ERR_T0_EXPIRED": _R.sender_not_fax,
    "T30_ERR_T1_EXPIRED": _R.sender_not_fax,
    "T30_ERR_CALLDROPPED": _R.call_dropped,
    "T30_ERR_RX_NOCARRIER": _R.call_dropped,
    "T30_ERR_RX_NOEOL": _R.call_dropped,
    "T30_ERR_RX_DCNWHY": _R.call_dropped,
    "T30_ERR_RX_DCNDATA": _R.call_dropped,
    "T30_ERR_RX_DCNFAX": _R.call_dropped,
    "T30_ERR_RX_DCNPHD": _R.call_dropped,
    "T30_ERR_RX_DCNRRD": _R.call_dropped,
    "T30_ERR_RX_DCNNORTN": _R.call_dropped,
    "T30_ERR_RX_NOFAX": _R.sender_no_response,
    "T30_ERR_RX_T2EXPDCN": _R.sender_no_response,
    "T30_ERR_RX_T2EXPD": _R.sender_no_response,
    "T30_ERR_RX_T2EXPFAX": _R.sender_no_response,
    "T30_ERR_RX_T2EXPMPS": _R.sender_no_response,
    "T30_ERR_RX_T2EXPRR": _R.sender_no_response,
    "T30_ERR_RX_T2EXP": _R.sender_no_response,
    "T30_ERR_HDLC_CARRIER": _R.training_failed,
    "T30_ERR_CANNOT_TRAIN": _R.training_failed,
    "T30_ERR_NOMEM": _R.internal_error,
}
_BY_CLASS: Final[dict[EngineClass, FailureReason]] = {
    EngineClass.LINE: _R.call_dropped,
    EngineClass.PROTOCOL: _R.protocol_error,
    EngineClass.DOCUMENT: _R.document_unreadable,
}

# The receiver's post-page responses that mean it kept the page.
_CONFIRMED: Final = frozenset({"MCF", "RTP", "PIP"})
_ENCODINGS: Final = {
    spandsp.T4_COMPRESSION_ITU_T4_1D: "T.4 1D",
    spandsp.T4_COMPRESSION_ITU_T4_2D: "T.4 2D",
    spandsp.T4_COMPRESSION_ITU_T6: "T.6",
}


def call_failure(exc: CallFailed) -> FaxFailure:
    """A call that ended before it was answered (busy, no answer, bad number ...)."""
    return FaxFailure(
        failure_class=FailureClass.line,
        code=-exc.status,
        text=_SIP_TEXT[exc.kind],
        sip_status=exc.status,
        reason=_SIP_REASON[exc.kind],
    )


def failure_reason(outcome: FaxOutcome) -> FailureReason:
    """The stable reason for how T.30 ended (a failed outcome)."""
    table = _RECEIVING if outcome.role == "receive" else _SENDING
    named = table.get(outcome.completion_name)
    if named is not None:
        return named
    return _BY_CLASS[outcome.failure_class or EngineClass.PROTOCOL]


def fax_failure(outcome: FaxOutcome, *, pages_expected: int | None = None) -> FaxFailure | None:
    """None when the fax went through (with ``pages_expected``: every one of its pages).

    T.30 ending well with pages missing is never reported as sent: it is a failure of
    the engine's class, protocol when it gave none.
    """
    short = pages_expected is not None and outcome.pages_transferred < pages_expected
    if outcome.success and not short:
        return None
    text = outcome.message
    reason = failure_reason(outcome)
    if outcome.success:
        text = f"Only {outcome.pages_transferred} of {pages_expected} pages were accepted."
        reason = FailureReason.pages_not_confirmed
    return FaxFailure(
        failure_class=_CLASSES[outcome.failure_class or EngineClass.PROTOCOL],
        code=outcome.completion_code,
        text=text,
        reason=reason,
    )


def transfer_statistics(
    outcome: FaxOutcome, *, pages_total: int, duration_s: float
) -> TransferStatistics:
    """The call's figures; ``duration_s`` in call time."""
    return TransferStatistics(
        pages_transferred=outcome.pages_transferred,
        pages_total=pages_total,
        bit_rate=outcome.bit_rate,
        ecm=outcome.ecm,
        x_resolution=outcome.x_resolution,
        y_resolution=outcome.y_resolution,
        remote_station_id=outcome.remote_id,
        duration_s=round(duration_s, 3),
    )


def page_report(outcome: FaxOutcome, *, first_page: int = 1) -> tuple[PageReport, ...]:
    """One entry per page of the call, in page order, from its last phase D report.

    A page the receiver asked for again (RTN, then a retrain) has several reports; the
    last one is what became of it, ``transmissions`` how many there were. Pages count
    in the whole document: ``first_page`` is the document's page the call began with
    (a redial that resumes after the pages already confirmed starts later than 1).
    Receiving, a page is confirmed when it is among the pages T.30 says arrived.
    """
    last: dict[int, PageStats] = {}
    sent: dict[int, int] = {}
    for stats in outcome.pages:
        last[stats.page] = stats
        sent[stats.page] = sent.get(stats.page, 0) + 1
    receiving = outcome.role == "receive"
    return tuple(
        PageReport(
            page=first_page + number - 1,
            confirmed=number <= outcome.pages_transferred
            if receiving
            else stats.result in _CONFIRMED,
            result=stats.result,
            bit_rate=stats.bit_rate,
            ecm=stats.ecm,
            x_resolution=stats.x_resolution,
            y_resolution=stats.y_resolution,
            encoding=_ENCODINGS.get(stats.encoding, str(stats.encoding)),
            length=max(0, stats.length),
            image_bytes=max(0, stats.image_size),
            bad_rows=max(0, stats.bad_rows),
            longest_bad_row_run=max(0, stats.longest_bad_row_run),
            ecm_retries=max(0, stats.ecm_retries),
            transmissions=sent[number],
        )
        for number, stats in sorted(last.items())
    )
