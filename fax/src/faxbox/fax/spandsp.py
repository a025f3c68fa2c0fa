"""ctypes binding to libspandsp 0.0.6 (Debian ``libspandsp2``): audio fax, T.38 terminal, T.30.

Only what the fax engine uses is declared. Every state is allocated by spandsp (we pass
NULL) and freed by ``close()``. Every ctypes callback object is stored on the Python
object that owns the C state: if one were garbage collected while spandsp still held
its address, the next call into the library would jump into freed memory.

Callbacks never let an exception escape into C (ctypes would only print it and return
a default); they log it and keep it in ``callback_errors`` for the owner to re-raise.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from faxbox.fax.closing import Closing

log = logging.getLogger("faxbox.fax.spandsp")

SAMPLE_RATE = 8000
T30_MAX_IDENT_LEN = 20
T30_MAX_PAGE_HEADER_INFO = 50
# t30_state_t keeps file names in char[256]; spandsp would silently truncate longer ones.
MAX_PATH_BYTES = 255

# t30.h: T30_SUPPORT_* modem bits.
T30_SUPPORT_V27TER = 0x01
T30_SUPPORT_V29 = 0x02
T30_SUPPORT_V17 = 0x04
T30_SUPPORT_IAF = 0x10

# t30.h: T30_SUPPORT_* compression bits (0.0.6 masks everything but these three out).
T30_SUPPORT_T4_1D_COMPRESSION = 0x02
T30_SUPPORT_T4_2D_COMPRESSION = 0x04
T30_SUPPORT_T6_COMPRESSION = 0x08

# t4_rx.h: output encodings accepted by t30_set_rx_encoding.
T4_COMPRESSION_ITU_T4_1D = 1
T4_COMPRESSION_ITU_T4_2D = 2
T4_COMPRESSION_ITU_T6 = 3

# t38_terminal.h
T38_TERMINAL_OPTION_NO_PACING = 0x01

# logging.h
SPAN_LOG_NONE = 0
SPAN_LOG_ERROR = 1
SPAN_LOG_WARNING = 2
SPAN_LOG_PROTOCOL_ERROR = 3
SPAN_LOG_PROTOCOL_WARNING = 4
SPAN_LOG_FLOW = 5
SPAN_LOG_DEBUG = 8
SPAN_LOG_SHOW_PROTOCOL = 0x0800
SPAN_LOG_SHOW_SEVERITY = 0x0400

T30_ERR_OK = 0


class SpandspError(RuntimeError):
    """A spandsp call failed (allocation, or a value spandsp refused)."""


class T30Stats(ctypes.Structure):
    """``t30_stats_t`` from spandsp/t30.h (0.0.6): 15 ints, resolutions in pixels per metre."""

    _fields_: ClassVar[list[tuple[str, Any]]] = [
        ("bit_rate", ctypes.c_int),
        ("error_correcting_mode", ctypes.c_int),
        ("pages_tx", ctypes.c_int),
        ("pages_rx", ctypes.c_int),
        ("pages_in_file", ctypes.c_int),
        ("x_resolution", ctypes.c_int),
        ("y_resolution", ctypes.c_int),
        ("width", ctypes.c_int),
        ("length", ctypes.c_int),
        ("image_size", ctypes.c_int),
        ("encoding", ctypes.c_int),
        ("bad_rows", ctypes.c_int),
        ("longest_bad_row_run", ctypes.c_int),
        ("error_correcting_mode_retries", ctypes.c_int),
        ("current_status", ctypes.c_int),
    ]

    def as_dict(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name, _ in self._fields_}


# Callback prototypes (t30.h, t38_core.h, logging.h). Pointers are c_void_p: we never
# dereference the C states from Python, and plain ints are the cheapest to pass.
PHASE_BD_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
PHASE_E_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
REAL_TIME_FRAME_HANDLER = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int
)
T38_TX_PACKET_HANDLER = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int
)
MESSAGE_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p)
ERROR_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p)


def _load() -> ctypes.CDLL:
    for name in ("libspandsp.so.2", ctypes.util.find_library("spandsp")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise ImportError(
        "libspandsp.so.2 not found: install the Debian package libspandsp2 (spandsp 0.0.6)"
    )


lib = _load()

_P = ctypes.c_void_p
_I = ctypes.c_int
_S = ctypes.c_char_p


def _declare(name: str, restype: Any, *argtypes: Any) -> None:
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


# Audio fax (fax.h)
_declare("fax_init", _P, _P, _I)
_declare("fax_rx", _I, _P, _P, _I)
_declare("fax_tx", _I, _P, _P, _I)
_declare("fax_get_t30_state", _P, _P)
_declare("fax_get_logging_state", _P, _P)
_declare("fax_set_transmit_on_idle", None, _P, _I)
_declare("fax_release", _I, _P)
_declare("fax_free", _I, _P)
# T.38 terminal (t38_terminal.h, t38_core.h)
_declare("t38_terminal_init", _P, _P, _I, T38_TX_PACKET_HANDLER, _P)
_declare("t38_terminal_get_t30_state", _P, _P)
_declare("t38_terminal_get_t38_core_state", _P, _P)
_declare("t38_terminal_get_logging_state", _P, _P)
_declare("t38_terminal_send_timeout", _I, _P, _I)
_declare("t38_terminal_set_config", None, _P, _I)
_declare("t38_terminal_release", _I, _P)
_declare("t38_terminal_free", _I, _P)
_declare("t38_core_rx_ifp_packet", _I, _P, ctypes.c_char_p, _I, ctypes.c_uint16)
_declare("t38_core_get_logging_state", _P, _P)
# T.30 (t30.h, t30_api.h, t30_logging.h)
_declare("t30_set_tx_file", None, _P, _S, _I, _I)
_declare("t30_set_rx_file", None, _P, _S, _I)
_declare("t30_set_tx_ident", _I, _P, _S)
_declare("t30_get_rx_ident", _S, _P)
_declare("t30_set_tx_page_header_info", _I, _P, _S)
_declare("t30_set_tx_page_header_tz", _I, _P, _S)
_declare("t30_set_ecm_capability", _I, _P, _I)
_declare("t30_set_supported_modems", _I, _P, _I)
_declare("t30_set_supported_compressions", _I, _P, _I)
_declare("t30_set_rx_encoding", _I, _P, _I)
_declare("t30_set_phase_b_handler", None, _P, PHASE_BD_HANDLER, _P)
_declare("t30_set_phase_d_handler", None, _P, PHASE_BD_HANDLER, _P)
_declare("t30_set_phase_e_handler", None, _P, PHASE_E_HANDLER, _P)
_declare("t30_set_real_time_frame_handler", None, _P, REAL_TIME_FRAME_HANDLER, _P)
_declare("t30_get_transfer_statistics", None, _P, ctypes.POINTER(T30Stats))
_declare("t30_get_logging_state", _P, _P)
_declare("t30_terminate", None, _P)
_declare("t30_completion_code_to_str", _S, _I)
_declare("t30_frametype", _S, ctypes.c_uint8)
# Logging (logging.h)
_declare("span_log_set_level", _I, _P, _I)
_declare("span_log_set_message_handler", None, _P, MESSAGE_HANDLER)
_declare("span_log_set_error_handler", None, _P, ERROR_HANDLER)


def completion_code_to_str(code: int) -> str:
    """spandsp's own one-line description of a T.30 completion code (English, technical)."""
    text: bytes | None = lib.t30_completion_code_to_str(code)
    return (text or b"???").decode("ascii", "replace")


def frame_type_name(fcf: int) -> str:
    """Name of a T.30 frame (FCF byte), e.g. 0x80 -> "DIS"; used in the phase B/D logs."""
    text: bytes | None = lib.t30_frametype(fcf & 0xFF)
    return (text or b"???").decode("ascii", "replace")


def _encode_ascii(value: str, what: str, limit: int) -> bytes:
    try:
        data = value.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} must be plain ASCII: {value!r}") from exc
    if len(data) > limit:
        raise ValueError(f"{what} is longer than {limit} characters: {value!r}")
    return data


def _encode_path(path: str) -> bytes:
    data = path.encode()
    if len(data) > MAX_PATH_BYTES or b"\0" in data:
        raise ValueError(f"spandsp can only take file paths up to {MAX_PATH_BYTES} bytes: {path}")
    return data


def _decode(text: bytes | None) -> str:
    return (text or b"").decode("latin-1").strip()


class _Guard:
    """Runs Python code called from C, keeping any exception for the owner."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors: list[BaseException] = []

    def failed(self, where: str, exc: BaseException) -> None:
        log.error("%s: exception in spandsp %s callback", self.name, where, exc_info=exc)
        self.errors.append(exc)


class LogSink:
    """Sends one session's spandsp log lines to Python ``logging`` at DEBUG.

    0.0.6's message handler gets no user data pointer, so each session gets its own
    ctypes closure that carries the session name.
    """

    def __init__(self, logger: logging.Logger, name: str) -> None:
        self._logger = logger
        self._name = name
        self.message_handler = MESSAGE_HANDLER(self._message)
        self.error_handler = ERROR_HANDLER(self._error)

    def _message(self, level: int, text: bytes | None) -> None:
        # A broken log handler must not take the modem down with it.
        with contextlib.suppress(Exception):
            self._logger.debug("%s %s", self._name, _decode(text))

    def _error(self, text: bytes | None) -> None:
        self._message(SPAN_LOG_ERROR, text)

    def attach(self, logging_state: int | None, enabled: bool) -> None:
        """Route ``logging_state`` here; with ``enabled`` False spandsp formats nothing."""
        if not logging_state:
            return
        lib.span_log_set_message_handler(logging_state, self.message_handler)
        lib.span_log_set_error_handler(logging_state, self.error_handler)
        level = (SPAN_LOG_FLOW | SPAN_LOG_SHOW_PROTOCOL | SPAN_LOG_SHOW_SEVERITY) if enabled else 0
        lib.span_log_set_level(logging_state, level)


PhaseHandler = Callable[[int], None]


class T30:
    """The T.30 engine inside an audio fax or T.38 terminal state; owned by that state.

    Holds no memory of its own: it is only valid while its owner is open.
    """

    def __init__(self, pointer: int, guard: _Guard) -> None:
        if not pointer:
            raise SpandspError("spandsp returned no T.30 state")
        self._p = pointer
        self._guard = guard
        # Strings passed by pointer: kept so spandsp never reads freed Python memory,
        # although 0.0.6 copies most of them.
        self._strings: dict[str, bytes] = {}
        self._callbacks: dict[str, Any] = {}

    @property
    def pointer(self) -> int:
        return self._p

    def set_tx_file(self, path: str, start_page: int = -1, stop_page: int = -1) -> None:
        data = self._strings["tx_file"] = _encode_path(path)
        lib.t30_set_tx_file(self._p, data, start_page, stop_page)

    def set_rx_file(self, path: str, stop_page: int = -1) -> None:
        data = self._strings["rx_file"] = _encode_path(path)
        lib.t30_set_rx_file(self._p, data, stop_page)

    def set_tx_ident(self, ident: str) -> None:
        data = self._strings["ident"] = _encode_ascii(ident, "Station identity", T30_MAX_IDENT_LEN)
        if lib.t30_set_tx_ident(self._p, data) != 0:
            raise SpandspError(f"spandsp refused the station identity {ident!r}")

    @property
    def rx_ident(self) -> str:
        """The far end's TSI/CSI as received (blank until phase B)."""
        return _decode(lib.t30_get_rx_ident(self._p))

    def set_tx_page_header_info(self, info: str) -> None:
        data = self._strings["header"] = _encode_ascii(
            info, "Page header text", T30_MAX_PAGE_HEADER_INFO
        )
        if lib.t30_set_tx_page_header_info(self._p, data) != 0:
            raise SpandspError(f"spandsp refused the page header {info!r}")

    def set_tx_page_header_tz(self, posix_tz: str) -> None:
        """Set the zone (POSIX TZ string) for the header date; see session.py on when."""
        data = self._strings["tz"] = _encode_ascii(posix_tz, "Time zone", 255)
        lib.t30_set_tx_page_header_tz(self._p, data)

    def set_ecm_capability(self, enabled: bool) -> None:
        lib.t30_set_ecm_capability(self._p, int(enabled))

    def set_supported_modems(self, bits: int) -> None:
        lib.t30_set_supported_modems(self._p, bits)

    def set_supported_compressions(self, bits: int) -> None:
        lib.t30_set_supported_compressions(self._p, bits)

    def set_rx_encoding(self, encoding: int) -> None:
        if lib.t30_set_rx_encoding(self._p, encoding) != 0:
            raise SpandspError(f"spandsp refused receive encoding {encoding}")

    def set_phase_b_handler(self, handler: PhaseHandler) -> None:
        self._callbacks["b"] = PHASE_BD_HANDLER(self._bd_adapter("phase B", handler))
        lib.t30_set_phase_b_handler(self._p, self._callbacks["b"], None)

    def set_phase_d_handler(self, handler: PhaseHandler) -> None:
        self._callbacks["d"] = PHASE_BD_HANDLER(self._bd_adapter("phase D", handler))
        lib.t30_set_phase_d_handler(self._p, self._callbacks["d"], None)

    def set_phase_e_handler(self, handler: PhaseHandler) -> None:
        guard = self._guard

        def phase_e(_s: int | None, _u: int | None, code: int) -> None:
            try:
                handler(code)
            except Exception as exc:
                guard.failed("phase E", exc)

        self._callbacks["e"] = PHASE_E_HANDLER(phase_e)
        lib.t30_set_phase_e_handler(self._p, self._callbacks["e"], None)

    def set_real_time_frame_handler(self, handler: Callable[[bool, bytes], None]) -> None:
        """``handler(incoming, frame)`` for every HDLC control frame sent or received."""
        guard = self._guard

        def frame(_s: int | None, _u: int | None, direction: int, msg: int | None, n: int) -> None:
            try:
                handler(bool(direction), ctypes.string_at(msg, n) if msg and n > 0 else b"")
            except Exception as exc:
                guard.failed("real-time frame", exc)

        self._callbacks["frame"] = REAL_TIME_FRAME_HANDLER(frame)
        lib.t30_set_real_time_frame_handler(self._p, self._callbacks["frame"], None)

    def _bd_adapter(
        self, where: str, handler: PhaseHandler
    ) -> Callable[[int | None, int | None, int], int]:
        guard = self._guard

        def phase(_s: int | None, _u: int | None, result: int) -> int:
            try:
                handler(result)
            except Exception as exc:
                guard.failed(where, exc)
            return T30_ERR_OK

        return phase

    def transfer_statistics(self) -> T30Stats:
        stats = T30Stats()
        lib.t30_get_transfer_statistics(self._p, ctypes.byref(stats))
        return stats

    def terminate(self) -> None:
        """Tell T.30 the line has gone; fires phase E if the call had not finished."""
        lib.t30_terminate(self._p)

    @property
    def logging_state(self) -> int | None:
        state: int | None = lib.t30_get_logging_state(self._p)
        return state


class _Owner(Closing):
    """Common lifetime handling: idempotent ``close()`` and context manager."""

    _kind = "spandsp state"

    def __init__(self, name: str) -> None:
        self.name = name
        self._guard = _Guard(name)
        self._p: int | None = None
        self._t30: T30 | None = None

    @property
    def callback_errors(self) -> list[BaseException]:
        return self._guard.errors

    @property
    def closed(self) -> bool:
        return self._p is None

    @property
    def handle(self) -> int | None:
        """The C state's address, None once closed (for callers on a hot path)."""
        return self._p

    @property
    def t30(self) -> T30:
        if self._t30 is None:
            raise SpandspError(f"{self._kind} {self.name} is closed")
        return self._t30

    def _pointer(self) -> int:
        if self._p is None:
            raise SpandspError(f"{self._kind} {self.name} is closed")
        return self._p

    def _free(self, pointer: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pointer, self._p = self._p, None
        if pointer is not None:
            self._free(pointer)
            # Only now may the callbacks go: spandsp held their addresses until the free.
            self._t30 = None

    def __del__(self) -> None:
        # A forgotten close() would otherwise leak the C state (tens of kilobytes). At
        # interpreter exit the library may already be gone; the OS reclaims it then.
        if getattr(self, "_p", None) is not None:
            with contextlib.suppress(Exception):
                self.close()


class AudioFax(_Owner):
    """``fax_state_t``: a T.30 terminal speaking G.711-band audio (8 kHz, 16-bit linear)."""

    _kind = "audio fax"

    def __init__(self, calling_party: bool, name: str = "fax", log_enabled: bool = False) -> None:
        super().__init__(name)
        pointer: int | None = lib.fax_init(None, int(calling_party))
        if not pointer:
            raise SpandspError("fax_init failed")
        self._p = pointer
        # Silence instead of a short block when the modem has nothing to send, so every
        # fax_tx call yields exactly the samples asked for.
        lib.fax_set_transmit_on_idle(pointer, 1)
        self._t30 = T30(lib.fax_get_t30_state(pointer), self._guard)
        self.log_sink = LogSink(log, name)
        self.log_sink.attach(lib.fax_get_logging_state(pointer), log_enabled)
        self.log_sink.attach(self._t30.logging_state, log_enabled)

    def rx(self, samples_address: int, count: int) -> None:
        """Feed ``count`` int16 samples at ``samples_address`` (caller keeps them alive)."""
        lib.fax_rx(self._pointer(), samples_address, count)

    def tx(self, samples_address: int, count: int) -> int:
        """Fill ``count`` int16 samples at ``samples_address``; returns how many were made."""
        made: int = lib.fax_tx(self._pointer(), samples_address, count)
        return made

    def _free(self, pointer: int) -> None:
        lib.fax_free(pointer)  # fax_free calls fax_release itself


class T38Terminal(_Owner):
    """``t38_terminal_state_t``: a T.30 terminal speaking T.38 IFP packets.

    ``on_packet(ifp, count)`` gets every packet the terminal wants sent; ``count`` is how
    many copies spandsp asks for (UDPTL redundancy), all to carry one sequence number.
    """

    _kind = "T.38 terminal"

    def __init__(
        self,
        calling_party: bool,
        on_packet: Callable[[bytes, int], None],
        name: str = "t38",
        log_enabled: bool = False,
        paced: bool = True,
    ) -> None:
        super().__init__(name)
        guard = self._guard

        def tx_packet(_s: int | None, _u: int | None, buf: int | None, n: int, count: int) -> int:
            try:
                on_packet(ctypes.string_at(buf, n) if buf and n > 0 else b"", count)
            except Exception as exc:
                guard.failed("T.38 tx packet", exc)
                return -1
            return 0

        self._tx_packet = T38_TX_PACKET_HANDLER(tx_packet)
        pointer: int | None = lib.t38_terminal_init(None, int(calling_party), self._tx_packet, None)
        if not pointer:
            raise SpandspError("t38_terminal_init failed")
        self._p = pointer
        if not paced:
            lib.t38_terminal_set_config(pointer, T38_TERMINAL_OPTION_NO_PACING)
        self._core: int = lib.t38_terminal_get_t38_core_state(pointer)
        self._t30 = T30(lib.t38_terminal_get_t30_state(pointer), self._guard)
        self.log_sink = LogSink(log, name)
        self.log_sink.attach(lib.t38_terminal_get_logging_state(pointer), log_enabled)
        self.log_sink.attach(lib.t38_core_get_logging_state(self._core), log_enabled)
        self.log_sink.attach(self._t30.logging_state, log_enabled)

    def rx_ifp_packet(self, ifp: bytes, seq: int) -> int:
        """Hand one received IFP packet (UDPTL primary) to the terminal."""
        self._pointer()
        result: int = lib.t38_core_rx_ifp_packet(self._core, ifp, len(ifp), seq & 0xFFFF)
        return result

    def send_timeout(self, samples: int) -> bool:
        """Advance time by ``samples`` (8 kHz); True once the terminal has finished."""
        return bool(lib.t38_terminal_send_timeout(self._pointer(), samples))

    def _free(self, pointer: int) -> None:
        lib.t38_terminal_free(pointer)
