"""The carrier line as the transmitter sees it: place one fax call, report how it ended.

``FaxLine`` is the port the handler uses; ``SipFaxLine`` places the call through one
``UserAgent`` shared by every call of the process (one UDP socket, many dialogs),
asks for T.38 once answered (the call stays on G.711 when the far end refuses) and
pumps a spandsp session over whatever media the call ends up on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from faxbox.fax.line.pump import run_fax_over_call
from faxbox.fax.outcome import FailureClass as EngineClass
from faxbox.fax.outcome import FaxOutcome
from faxbox.fax.session import CallSettings, Compression, FaxEngine, FaxSession, Modem, T38Session
from faxbox.fax.sip.dialog import Call, CallEnded
from faxbox.fax.sip.digest import Credentials
from faxbox.fax.sip.sdp import MediaKind
from faxbox.fax.sip.ua import CallFailed, FailureKind, UserAgent
from faxbox.shared.contracts import FailureClass, FaxFailure, TransferStatistics
from faxbox.shared.store import Carrier

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Dial:
    """One call to place."""

    fax_id: str
    destination: str
    caller_id: str | None
    carrier: Carrier
    tiff: Path
    pages_total: int
    identity: str = ""
    header_name: str = ""
    timezone: str = "UTC"
    degrade: int = 0  # protocol fallback: 1 ECM off, 2 also no V.17, 3 V.27ter only


@dataclass(frozen=True, slots=True)
class CallReport:
    """How the call ended. ``failure`` is None exactly when the fax went through."""

    failure: FaxFailure | None
    pages_sent: int
    statistics: TransferStatistics | None = None
    media: str = "none"
    retryable: bool = True

    @property
    def success(self) -> bool:
        return self.failure is None


class FaxLine(Protocol):
    async def transmit(self, dial: Dial) -> CallReport: ...


# SIP failures, as the sender will read them. Codes are the negative SIP status, so
# they never clash with spandsp's completion codes (0 and up).
_SIP_TEXT: dict[FailureKind, str] = {
    FailureKind.BUSY: "The line was busy.",
    FailureKind.NO_ANSWER: "Nobody answered the call.",
    FailureKind.BAD_NUMBER: "The number does not exist or cannot be reached.",
    FailureKind.UNAVAILABLE: "The telephone network could not place the call right now.",
    FailureKind.REJECTED: "The call was refused by the telephone network.",
    FailureKind.OTHER: "The call could not be placed.",
}


def sip_failure(exc: CallFailed) -> CallReport:
    kind = exc.kind
    failure = FaxFailure(
        failure_class=FailureClass.line,
        code=-exc.status,
        text=_SIP_TEXT[kind],
        sip_status=exc.status,
    )
    # A number that does not exist will not exist in five minutes either.
    return CallReport(failure=failure, pages_sent=0, retryable=kind is not FailureKind.BAD_NUMBER)


_CLASSES = {
    EngineClass.LINE: FailureClass.line,
    EngineClass.PROTOCOL: FailureClass.protocol,
    EngineClass.DOCUMENT: FailureClass.document,
}


def report_from_outcome(
    outcome: FaxOutcome, *, pages_total: int, duration_s: float, media: str
) -> CallReport:
    statistics = TransferStatistics(
        pages_transferred=outcome.pages_transferred,
        pages_total=pages_total,
        bit_rate=outcome.bit_rate,
        ecm=outcome.ecm,
        x_resolution=outcome.x_resolution,
        y_resolution=outcome.y_resolution,
        remote_station_id=outcome.remote_id,
        duration_s=round(duration_s, 3),
    )
    if outcome.success and outcome.pages_transferred >= pages_total:
        return CallReport(None, outcome.pages_transferred, statistics, media)
    engine_class = outcome.failure_class or EngineClass.PROTOCOL
    text = outcome.message
    if outcome.success:  # T.30 said OK but not every page went: never report that as sent
        text = f"Only {outcome.pages_transferred} of {pages_total} pages were accepted."
    failure = FaxFailure(
        failure_class=_CLASSES[engine_class], code=outcome.completion_code, text=text
    )
    return CallReport(failure, outcome.pages_transferred, statistics, media)


def call_settings(dial: Dial) -> CallSettings:
    modems = frozenset(Modem)
    if dial.degrade >= 2:
        modems = frozenset({Modem.V29, Modem.V27TER})
    if dial.degrade >= 3:
        modems = frozenset({Modem.V27TER})
    ecm = dial.degrade < 1
    compressions = (
        frozenset(Compression) if ecm else frozenset({Compression.T4_1D, Compression.T4_2D})
    )
    return CallSettings(
        file=dial.tiff,
        local_identity=dial.identity[:20],
        header_name=dial.header_name,
        timezone=dial.timezone,
        ecm=ecm,
        modems=modems,
        compressions=compressions,
    )


def _packets_in(call: Call) -> int:
    return call.rtp.packets_received + (call.udptl.packets_received if call.udptl else 0)


async def hang_up_when_silent(call: Call, silence_s: float) -> None:
    """Hang up once nothing at all has arrived for ``silence_s`` of call time.

    A far end that vanishes without a BYE leaves a T.38 terminal waiting forever (it
    never reaches phase E on its own), holding a channel for the whole call limit.
    """
    pace = call.pace or 1.0
    step = max(silence_s / 6, 0.5) / pace
    last, quiet = _packets_in(call), 0.0
    while not call.is_ended:
        await asyncio.sleep(step)
        now = _packets_in(call)
        quiet = 0.0 if now != last else quiet + step * pace
        last = now
        if quiet >= silence_s:
            log.warning("%s: no media for %.0f s, hanging up", call.call_id, quiet)
            await call.hangup()
            return


def carrier_uri(carrier: Carrier) -> str:
    if carrier.sip_host:
        return f"sip:{carrier.sip_host}:{carrier.sip_port or 5060}"
    if carrier.sip_uri:
        return carrier.sip_uri
    raise ValueError(f"carrier {carrier.name} has no SIP address")


class SipFaxLine:
    """Fax calls through ``ua`` (whose ``pace`` is the media clock of every call)."""

    def __init__(
        self,
        ua: UserAgent,
        *,
        answer_timeout_s: float = 60.0,
        max_call_s: float = 1800.0,
        request_t38: bool = True,
        media_silence_s: float = 60.0,
    ) -> None:
        self.ua = ua
        self.media_silence_s = media_silence_s
        self.answer_timeout_s = answer_timeout_s
        self.max_call_s = max_call_s
        # Unpaced media has no clock for T.38 (see run_fax_over_call).
        self.request_t38 = request_t38 and ua.pace > 0

    def _line_seconds(self, seconds: float) -> float:
        # Timeouts are in call time; on a faster test clock they pass faster too.
        return seconds / self.ua.pace if self.ua.pace > 0 else seconds

    async def transmit(self, dial: Dial) -> CallReport:
        carrier = dial.carrier
        credentials = None
        if carrier.sip_username:
            credentials = Credentials(carrier.sip_username, carrier.sip_password or "")
        try:
            call = await self.ua.dial(
                carrier_uri(carrier),
                dial.caller_id or "anonymous",
                dial.destination,
                answer_timeout=self._line_seconds(self.answer_timeout_s),
                credentials=credentials,
            )
        except CallFailed as exc:
            log.info("call to %s via %s failed: %s", dial.destination, carrier.name, exc)
            return sip_failure(exc)
        loop = asyncio.get_running_loop()
        started = loop.time()
        settings = call_settings(dial)

        def session(kind: MediaKind) -> FaxEngine:
            if kind == "t38":
                return T38Session("send", settings, name=f"t38-{dial.fax_id}")
            return FaxSession("send", settings, name=f"fax-{dial.fax_id}")

        watchdog = asyncio.create_task(hang_up_when_silent(call, self.media_silence_s))
        try:
            if self.request_t38:
                with contextlib.suppress(CallEnded):
                    await call.request_t38()
            outcome = await run_fax_over_call(call, session, max_seconds=self.max_call_s)
        finally:
            watchdog.cancel()
            if not call.is_ended:  # cancelled (lease lost, shutdown): never leave it up
                with contextlib.suppress(Exception):
                    await asyncio.shield(call.hangup())
        elapsed = loop.time() - started
        duration = elapsed * self.ua.pace if self.ua.pace > 0 else elapsed
        log.info(
            "fax call via %s ended: %s, %d/%d pages over %s",
            carrier.name,
            outcome.completion_name,
            outcome.pages_transferred,
            dial.pages_total,
            call.media_kind,
        )
        return report_from_outcome(
            outcome, pages_total=dial.pages_total, duration_s=duration, media=call.media_kind
        )
