"""The carrier line as the transmitter sees it: place one fax call, report how it ended.

``FaxLine`` (``ports``) is the port the handler uses; ``adapters.SipFaxLine`` places
the call through one ``UserAgent`` shared by every call of the process (its UDP socket
and TCP/TLS connections, many dialogs) the way the carrier asks for (transport, outbound proxy,
digest credentials and domain, T.38 in the INVITE or by re-INVITE, the size rule) and
sends the fax with ``faxbox.fax.line.send``, asking for T.38 once answered (or after
``t38_delay_s``; the call stays on G.711 when the far end refuses). What ended the call
becomes a ``CallReport`` with the failure in the contracts' terms; whether it is worth
another call, or another carrier at once (``carrier_trouble``), is ours.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from faxbox.fax.line import PageHook
from faxbox.fax.line.contract import call_failure, fax_failure, page_report, transfer_statistics
from faxbox.fax.outcome import FaxOutcome
from faxbox.fax.session import CallSettings, Compression, Modem
from faxbox.fax.sip.ua import CallFailed, FailureKind
from faxbox.shared.contracts import FaxFailure, PageReport, TransferStatistics
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
    timezone: str = "UTC"
    degrade: int = 0  # protocol fallback: 1 ECM off, 2 also no V.17, 3 V.27ter only
    first_page: int = 1  # the document's page ``tiff`` starts with
    # Set when the fax is cancelled: the call ends at once (hung up cleanly, see line).
    stop: asyncio.Event = field(default_factory=asyncio.Event, compare=False)
    # Told the pages of this call the far end has confirmed, as each is confirmed.
    on_page_confirmed: PageHook | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CallReport:
    """How the call ended. ``failure`` is None exactly when the fax went through."""

    failure: FaxFailure | None
    pages_sent: int
    statistics: TransferStatistics | None = None
    media: str = "none"
    retryable: bool = True
    # The carrier failed before the far end was reached (5xx, 408, timeout, no
    # connection): the handler tries the next carrier within the same attempt.
    carrier_trouble: bool = False
    retry_after_s: int | None = None  # a 503's Retry-After: leave the carrier alone that long
    page_report: tuple[PageReport, ...] = ()

    @property
    def success(self) -> bool:
        return self.failure is None


def sip_failure(exc: CallFailed) -> CallReport:
    # A number that does not exist will not exist in five minutes either.
    retryable = exc.kind is not FailureKind.BAD_NUMBER
    return CallReport(
        failure=call_failure(exc),
        pages_sent=0,
        retryable=retryable,
        carrier_trouble=exc.carrier_trouble,
        retry_after_s=exc.retry_after,
    )


def report_from_outcome(
    outcome: FaxOutcome, *, pages_total: int, duration_s: float, media: str, first_page: int = 1
) -> CallReport:
    statistics = transfer_statistics(outcome, pages_total=pages_total, duration_s=duration_s)
    failure = fax_failure(outcome, pages_expected=pages_total)
    return CallReport(
        failure,
        outcome.pages_transferred,
        statistics,
        media,
        page_report=page_report(outcome, first_page=first_page),
    )


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
    # No header_name: the header line is in the TIFF already (transmitter.document), so
    # spandsp draws none of its own.
    return CallSettings(
        file=dial.tiff,
        local_identity=dial.identity[:20],
        timezone=dial.timezone,
        ecm=ecm,
        modems=modems,
        compressions=compressions,
    )
