"""How a fax call ended, in the contracts' terms (``faxbox.shared.contracts``).

The engine classes a T.30 failure as line, protocol or document
(``faxbox.fax.outcome``); the contracts use the same three classes. A call that never
connected is a line failure whose code is the negative SIP status, so it never clashes
with spandsp's completion codes (0 and up). Texts are for the person who sent or is
receiving the fax.
"""

from __future__ import annotations

from faxbox.fax.outcome import FailureClass as EngineClass
from faxbox.fax.outcome import FaxOutcome
from faxbox.fax.sip.ua import CallFailed, FailureKind
from faxbox.shared.contracts import FailureClass, FaxFailure, TransferStatistics

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


def call_failure(exc: CallFailed) -> FaxFailure:
    """A call that ended before it was answered (busy, no answer, bad number ...)."""
    return FaxFailure(
        failure_class=FailureClass.line,
        code=-exc.status,
        text=_SIP_TEXT[exc.kind],
        sip_status=exc.status,
    )


def fax_failure(outcome: FaxOutcome, *, pages_expected: int | None = None) -> FaxFailure | None:
    """None when the fax went through (with ``pages_expected``: every one of its pages).

    T.30 ending well with pages missing is never reported as sent: it is a failure of
    the engine's class, protocol when it gave none.
    """
    short = pages_expected is not None and outcome.pages_transferred < pages_expected
    if outcome.success and not short:
        return None
    text = outcome.message
    if outcome.success:
        text = f"Only {outcome.pages_transferred} of {pages_expected} pages were accepted."
    return FaxFailure(
        failure_class=_CLASSES[outcome.failure_class or EngineClass.PROTOCOL],
        code=outcome.completion_code,
        text=text,
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
