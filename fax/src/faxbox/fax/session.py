"""One fax call's T.30 engine: audio (``FaxSession``) or T.38 (``T38Session``).

A session owns its spandsp state, configures it from ``CallSettings``, collects a
``PageStats`` per page in the phase D handler (ECM receive figures are blank by phase E,
so they must be taken there), takes the completion code in phase E and then reports a
``FaxOutcome``. It does no I/O and keeps no clock: the caller moves media in and out
(160 samples or the T.38 packets of 20 ms at a time) and that is what advances time.

The document to send is not checked here: run ``tiffcheck.check_tiff`` before dialling,
so a bad file never costs a call.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Self, TypedDict, TypeVar, Unpack

import numpy as np
import numpy.typing as npt
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from faxbox.fax import spandsp
from faxbox.fax.closing import Closing
from faxbox.fax.outcome import FaxOutcome, PageStats, describe
from faxbox.fax.tiffcheck import count_pages

log = logging.getLogger("faxbox.fax.session")

SAMPLES_PER_BLOCK = 160  # 20 ms at 8 kHz


class Role(StrEnum):
    SEND = "send"
    RECEIVE = "receive"


class Modem(StrEnum):
    V17 = "V.17"  # up to 14400 bit/s
    V29 = "V.29"  # 9600/7200
    V27TER = "V.27ter"  # 4800/2400


class Compression(StrEnum):
    T4_1D = "T.4 1D"  # MH
    T4_2D = "T.4 2D"  # MR
    T6 = "T.6"  # MMR, only ever used with ECM


_MODEM_BITS = {
    Modem.V17: spandsp.T30_SUPPORT_V17,
    Modem.V29: spandsp.T30_SUPPORT_V29,
    Modem.V27TER: spandsp.T30_SUPPORT_V27TER,
}
_COMPRESSION_BITS = {
    Compression.T4_1D: spandsp.T30_SUPPORT_T4_1D_COMPRESSION,
    Compression.T4_2D: spandsp.T30_SUPPORT_T4_2D_COMPRESSION,
    Compression.T6: spandsp.T30_SUPPORT_T6_COMPRESSION,
}
_RX_ENCODINGS = {
    Compression.T4_1D: spandsp.T4_COMPRESSION_ITU_T4_1D,
    Compression.T4_2D: spandsp.T4_COMPRESSION_ITU_T4_2D,
    Compression.T6: spandsp.T4_COMPRESSION_ITU_T6,
}


def _fold_ascii(value: object) -> object:
    # The page header font and the T.30 ident fields are ASCII only: "Müller" is better
    # sent as "Muller" than refused.
    if isinstance(value, str):
        value = unicodedata.normalize("NFKD", value)
        value = "".join(c for c in value if not unicodedata.combining(c))
    return value


def _printable_ascii(value: str) -> str:
    if not all(" " <= c <= "~" for c in value):
        raise ValueError("only letters, digits, spaces and common punctuation (ASCII) are allowed")
    return value


# The page header's and the T.30 ident fields' text; each field adds its length limit,
# then the ASCII check (a folded value too long is reported as too long).
_FoldedText = Annotated[str, BeforeValidator(_fold_ascii)]

_POSIX_TZ = re.compile(r"^[A-Za-z]{3,}[+-]?\d")
_ANGLE_NAME = re.compile(r"<[^>]*>")


@lru_cache(maxsize=256)
def posix_tz(zone: str) -> str:
    """The POSIX TZ rule spandsp's header clock understands, for an IANA name or a rule.

    spandsp has its own copy of the old tzcode parser: it reads rules like
    ``CET-1CEST,M3.5.0,M10.5.0/3`` but not quoted names like ``<+0330>-3:30`` (it then
    silently uses UTC), and it cannot read zoneinfo files by name. So the rule is taken
    from the footer of the zone's TZif file and quoted names are replaced by letters
    (the header never prints the zone name).
    """
    rule: str | None = None
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        if _POSIX_TZ.match(zone):
            rule = zone
    else:
        rule = _tzif_footer(zone)
    if rule is None:
        raise ValueError(f"unknown time zone {zone!r} (use a name such as 'Europe/Berlin')")
    names = iter(("STD", "DST"))
    return _ANGLE_NAME.sub(lambda _m: next(names, "DST"), rule)


def _tzif_footer(zone: str) -> str | None:
    data: bytes | None = None
    for base in zoneinfo.TZPATH:
        candidate = os.path.join(base, zone)
        if os.path.isfile(candidate):
            data = Path(candidate).read_bytes()
            break
    if data is None:
        try:  # the tzdata wheel, where the system has no zoneinfo directory
            package, _, leaf = f"tzdata.zoneinfo.{zone}".replace("/", ".").rpartition(".")
            data = resources.files(package).joinpath(leaf).read_bytes()
        except (ModuleNotFoundError, FileNotFoundError, OSError):
            return None
    # TZif version 2+ ends with "\n<POSIX rule>\n"; version 1 files have no rule.
    if data[:4] != b"TZif" or data[4:5] < b"2" or not data.endswith(b"\n"):
        return None
    footer = data[:-1].rsplit(b"\n", 1)[-1].decode("ascii", "replace")
    return footer or None


def _valid_timezone(value: str | None) -> str | None:
    if value is not None:
        posix_tz(value)
    return value


def _valid_path(value: Path) -> Path:
    if len(os.fsencode(value)) > spandsp.MAX_PATH_BYTES:
        raise ValueError(f"path longer than {spandsp.MAX_PATH_BYTES} bytes")
    return value


class CallSettings(BaseModel):
    """How one call's fax machine presents itself and what it may negotiate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # TSI/CSI: the number shown on the other machine's display and report.
    local_identity: Annotated[
        _FoldedText, Field(max_length=spandsp.T30_MAX_IDENT_LEN), AfterValidator(_printable_ascii)
    ] = ""
    # Printed at the top of every page we send, next to the date and page number.
    header_name: Annotated[
        _FoldedText,
        Field(max_length=spandsp.T30_MAX_PAGE_HEADER_INFO),
        AfterValidator(_printable_ascii),
    ] = ""
    # For the date and time in that header: an IANA name ("Europe/Berlin") or a POSIX
    # rule; None means the process's local time.
    timezone: Annotated[str | None, AfterValidator(_valid_timezone)] = None
    ecm: bool = True
    modems: frozenset[Modem] = Field(default=frozenset(Modem), min_length=1)
    compressions: frozenset[Compression] = Field(default=frozenset(Compression), min_length=1)
    # The TIFF to send, or the TIFF to write what we receive to.
    file: Annotated[Path, AfterValidator(_valid_path)]
    # How a received file is stored. T.6 (Group 4) is the smallest and what img2pdf can
    # embed in a PDF without re-encoding; spandsp's own default would be T.4 2D.
    receive_encoding: Compression = Compression.T6

    @model_validator(mode="after")
    def _t6_needs_ecm(self) -> Self:
        # T.30 only allows T.6 inside ECM frames. Asked for T.6 alone without ECM, spandsp
        # quietly falls back to T.4 1D (measured), the bulkiest coding: the opposite of
        # what the setting asks for, so refuse it.
        if not self.ecm and self.compressions == {Compression.T6}:
            raise ValueError("T.6 compression needs ECM: allow T.4 as well or enable ECM")
        return self


class SessionNotFinished(RuntimeError):
    """``result`` was asked for before phase E."""


class FaxEngineError(RuntimeError):
    """Python code called back from spandsp failed; the call cannot be trusted."""


# Post-page responses that mean the receiver kept the page (T.30 FCFs, as spandsp names them).
_PAGE_ACCEPTED = frozenset({"MCF", "RTP", "PIP"})


_O = TypeVar("_O", spandsp.AudioFax, spandsp.T38Terminal)


class SessionOptions(TypedDict, total=False):
    """What either engine takes besides role and settings: ``calling`` (see ``FaxSession``)
    and ``name``, the session's name in the logs (default: kind and role)."""

    calling: bool | None
    name: str | None


class _Session(Closing):
    kind = "fax"

    def __init__(
        self,
        role: Role | str,
        settings: CallSettings,
        *,
        calling: bool | None = None,
        name: str | None = None,
    ) -> None:
        self.role = Role(role)
        self.settings = settings
        self.name = name or f"{self.kind}-{self.role.value}"
        self.done = False
        self.completion_code: int | None = None
        self.remote_id = ""
        self.pages: list[PageStats] = []
        self._pages_in_file = 0
        self._final: spandsp.T30Stats | None = None
        self._owner: spandsp.AudioFax | spandsp.T38Terminal | None = None
        # We dialled: we call (CNG); we answered: we answer (CED), unless told otherwise.
        self._calling = self.role is Role.SEND if calling is None else calling
        # Sending: told the pages the far end has confirmed so far, at each MCF (RTP, PIP),
        # from inside spandsp's callback: it must be quick and must not raise.
        self.on_page_confirmed: Callable[[int], None] | None = None
        # Receiving: told each page's report and the sender's identity as the page ends
        # (written to the file, its confirmation not yet sent); same rules.
        self.on_page_received: Callable[[PageStats, str], None] | None = None

    @property
    def _log_enabled(self) -> bool:
        return logging.getLogger("faxbox.fax.spandsp").isEnabledFor(logging.DEBUG)

    def _own(self, owner: _O) -> _O:
        """``owner`` set up as this session's engine; closed again if that fails."""
        try:
            self._setup(owner)
        except BaseException:
            owner.close()
            raise
        self._errors = owner.callback_errors
        return owner

    def _setup(self, owner: spandsp.AudioFax | spandsp.T38Terminal) -> None:
        self._owner = owner
        t30 = owner.t30
        s = self.settings
        if s.local_identity:
            t30.set_tx_ident(s.local_identity)
        if s.header_name:
            t30.set_tx_page_header_info(s.header_name)
        if s.timezone:
            # Must be set before the document is opened; 0.0.6 ignores a zone set later.
            t30.set_tx_page_header_tz(posix_tz(s.timezone))
        t30.set_ecm_capability(s.ecm)
        modems = 0
        for modem in s.modems:
            modems |= _MODEM_BITS[modem]
        t30.set_supported_modems(modems)
        compressions = 0
        for compression in s.compressions:
            compressions |= _COMPRESSION_BITS[compression]
        t30.set_supported_compressions(compressions)
        if self.role is Role.SEND:
            t30.set_tx_file(str(s.file))
        else:
            t30.set_rx_file(str(s.file))
            t30.set_rx_encoding(_RX_ENCODINGS[s.receive_encoding])
        t30.set_phase_b_handler(self._on_phase_b)
        t30.set_phase_d_handler(self._on_phase_d)
        t30.set_phase_e_handler(self._on_phase_e)

    # spandsp callbacks -------------------------------------------------------------

    def _on_phase_b(self, frame: int) -> None:
        t30 = self._t30()
        self.remote_id = t30.rx_ident
        log.debug(
            "%s phase B %s, remote %r", self.name, spandsp.frame_type_name(frame), self.remote_id
        )

    def _on_phase_d(self, frame: int) -> None:
        stats = self._t30().transfer_statistics()
        result = spandsp.frame_type_name(frame)
        if self.role is Role.SEND:
            done = stats.pages_tx
            page = done if result in _PAGE_ACCEPTED else done + 1
        else:
            page = max(stats.pages_rx, 1)
        self._pages_in_file = max(self._pages_in_file, stats.pages_in_file)
        self.pages.append(
            PageStats(
                page=page,
                result=result,
                bit_rate=stats.bit_rate,
                ecm=bool(stats.error_correcting_mode),
                x_resolution=stats.x_resolution,
                y_resolution=stats.y_resolution,
                width=stats.width,
                length=stats.length,
                image_size=stats.image_size,
                encoding=stats.encoding,
                bad_rows=stats.bad_rows,
                longest_bad_row_run=stats.longest_bad_row_run,
                ecm_retries=stats.error_correcting_mode_retries,
            )
        )
        log.debug("%s phase D %s page %d at %d bit/s", self.name, result, page, stats.bit_rate)
        if self.role is Role.SEND and result in _PAGE_ACCEPTED and self.on_page_confirmed:
            self.on_page_confirmed(stats.pages_tx)
        if self.role is Role.RECEIVE and self.on_page_received:
            self.on_page_received(self.pages[-1], self.remote_id)

    def _on_phase_e(self, code: int) -> None:
        t30 = self._t30()
        self._final = t30.transfer_statistics()
        self.remote_id = t30.rx_ident or self.remote_id
        self.completion_code = code
        self.done = True
        log.debug("%s phase E %d (%s)", self.name, code, spandsp.completion_code_to_str(code))

    # -------------------------------------------------------------------------------

    def _t30(self) -> spandsp.T30:
        if self._owner is None:
            raise FaxEngineError(f"{self.name} is closed")
        return self._owner.t30

    def _raise_callback_errors(self) -> None:
        owner = self._owner
        if owner is not None and owner.callback_errors:
            first = owner.callback_errors[0]
            raise FaxEngineError(f"{self.name}: a spandsp callback failed: {first!r}") from first

    @property
    def result(self) -> FaxOutcome:
        if not self.done or self.completion_code is None:
            raise SessionNotFinished(f"{self.name} has not reached phase E; call hangup() first")
        code = self.completion_code
        receiving = self.role is Role.RECEIVE
        info = describe(code, receiving=receiving)
        final = self._final
        pages_done = 0
        if final is not None:
            pages_done = final.pages_rx if receiving else final.pages_tx
        if receiving:
            pages_in_file = pages_done
        else:
            pages_in_file = self._pages_in_file or count_pages(self.settings.file)
        last = self.pages[-1] if self.pages else None
        return FaxOutcome(
            role=self.role.value,
            success=code == 0 and pages_done > 0,
            completion_code=code,
            completion_name=info.name,
            completion_text=spandsp.completion_code_to_str(code),
            failure_class=info.failure_class,
            message=info.message,
            hint=info.hint,
            pages_transferred=pages_done,
            pages_in_file=pages_in_file,
            bit_rate=last.bit_rate if last else 0,
            ecm=last.ecm if last else bool(final and final.error_correcting_mode),
            x_resolution=last.x_resolution if last else 0,
            y_resolution=last.y_resolution if last else 0,
            remote_id=self.remote_id,
            pages=list(self.pages),
        )

    def hangup(self) -> None:
        """The call has ended (BYE, on-hook): finish T.30 now; phase E runs if it had not."""
        if self._owner is not None and not self._owner.closed:
            self._owner.t30.terminate()
            self._raise_callback_errors()

    def close(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.close()


class FaxSession(_Session):
    """T.30 over audio: G.711-band samples in, samples out (8 kHz, signed 16-bit).

    ``calling`` defaults to True for sending (we dialled, we send CNG) and False for
    receiving (we answered, we send CED); pass it to poll or to send on an answered call.
    """

    kind = "fax"

    def __init__(
        self, role: Role | str, settings: CallSettings, **options: Unpack[SessionOptions]
    ) -> None:
        super().__init__(role, settings, **options)
        self._fax = self._own(spandsp.AudioFax(self._calling, self.name, self._log_enabled))
        self._fax_rx = spandsp.lib.fax_rx
        self._fax_tx = spandsp.lib.fax_tx

    def process(self, rx: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Take the samples heard from the line, return as many samples to send back."""
        samples = np.ascontiguousarray(rx, dtype=np.int16)
        if samples.ndim != 1:
            raise ValueError("audio must be a one-dimensional array of samples")
        pointer = self._fax.handle
        if pointer is None:
            raise FaxEngineError(f"{self.name} is closed")
        n = samples.shape[0]
        out = np.empty(n, dtype=np.int16)
        # Straight to the C functions: this runs 50 times a second per call, and the
        # wrapper methods cost as much as the modem work for a quiet line.
        self._fax_rx(pointer, samples.ctypes.data, n)
        self._fax_tx(pointer, out.ctypes.data, n)
        if self._errors:
            self._raise_callback_errors()
        return out


@dataclass(frozen=True, slots=True)
class T38Packet:
    """One IFP packet to send; ``copies`` is spandsp's redundancy count for it.

    Every copy carries the same ``seq`` (the UDPTL sequence number) so the far end can
    drop duplicates.
    """

    seq: int
    ifp: bytes
    copies: int


class T38Session(_Session):
    """T.30 over T.38: IFP packets in and out, time advanced by ``tick``.

    ``paced`` (the default, for UDPTL) makes spandsp spread image data over time like a
    real modem; unpaced sends as fast as ``tick`` is called (TCP, or tests).
    """

    kind = "t38"

    def __init__(
        self,
        role: Role | str,
        settings: CallSettings,
        *,
        paced: bool = True,
        **options: Unpack[SessionOptions],
    ) -> None:
        super().__init__(role, settings, **options)
        self._out: list[T38Packet] = []
        self._tx_seq = 0
        self._term = self._own(
            spandsp.T38Terminal(
                self._calling, self._on_packet, self.name, self._log_enabled, paced=paced
            )
        )

    def _on_packet(self, ifp: bytes, copies: int) -> None:
        self._out.append(T38Packet(self._tx_seq, ifp, copies))
        self._tx_seq = (self._tx_seq + 1) & 0xFFFF

    def rx_packet(self, ifp: bytes, seq: int) -> None:
        """Hand over one received IFP packet (the primary, after UDPTL decoding)."""
        if self._term.closed:
            raise FaxEngineError(f"{self.name} is closed")
        self._term.rx_ifp_packet(ifp, seq)
        if self._errors:
            self._raise_callback_errors()

    def take_packets(self) -> list[T38Packet]:
        """Everything produced since the last call, oldest first."""
        out, self._out = self._out, []
        return out

    def tick(self, samples: int = SAMPLES_PER_BLOCK) -> bool:
        """Let ``samples`` (at 8 kHz) of time pass; True once the terminal has finished."""
        if self._term.closed:
            raise FaxEngineError(f"{self.name} is closed")
        finished = self._term.send_timeout(samples)
        if self._errors:
            self._raise_callback_errors()
        return finished or self.done


# Either engine: a call's media (G.711 audio or T.38) decides which one runs.
FaxEngine = FaxSession | T38Session
