"""The fax line: one fax sent or received over one established SIP call.

``send`` and ``receive`` are how the transmitter, the inbound receiver and pstn-sim put
a fax on a call (placing or answering it is the user agent's, ``faxbox.fax.sip.ua``).
They own what every fax call needs, whichever service runs it:

- the session by media: a spandsp ``FaxSession`` while the call is on G.711 audio, a
  ``T38Session`` once it is on T.38. Either side's re-INVITE switches it, and T.30
  starts again on the new media (``pump``). With ``LineSettings.request_t38`` we ask
  for T.38 ourselves, once connected or ``t38_delay_s`` later if the far end has not
  asked first, and stay on G.711 when the far end refuses (488/606);
- the line pace (``pace``): every limit and duration is call time; T.38 needs a media
  clock, so an unpaced line never asks for it;
- the silence watchdog (``watchdog``): a far end that vanished without a BYE is hung up
  after ``silence_s`` of call time without a packet;
- hanging up when T.30 ends, and whatever ends the fax early (a shutdown, a lost lease):
  a cancelled ``send``/``receive`` never leaves the call up;
- the result in the contracts' terms (``contract``): ``fax_failure``, ``call_failure``
  and ``transfer_statistics``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict, Unpack

from faxbox.fax.line.pace import call_seconds, has_clock, real_seconds
from faxbox.fax.line.pump import run_fax_over_call
from faxbox.fax.line.watchdog import hang_up_when_silent
from faxbox.fax.outcome import FaxOutcome, PageStats
from faxbox.fax.session import CallSettings, FaxEngine, FaxSession, Role, T38Session
from faxbox.fax.sip.dialog import Call, CallEnded
from faxbox.fax.sip.sdp import MediaKind

# Told each session as it starts (a call that switches media starts a second one).
SessionHook = Callable[[MediaKind, FaxEngine], None]
# Sending: told the pages the far end has confirmed, as each is confirmed (inside
# spandsp's callback: quick, never raising).
PageHook = Callable[[int], None]
# Receiving: told each page's report and the sender's identity as the page ends (same).
ReceivedHook = Callable[[PageStats, str], None]


@dataclass(frozen=True, slots=True)
class LineSettings:
    """How a fax call is run, whatever is sent or received (times are call time)."""

    silence_s: float = 60.0  # no media packet for this long: the far end is gone
    max_call_s: float = 1800.0  # no phase E by then: hang up
    request_t38: bool = False  # re-INVITE to T.38 once connected (never on an unpaced line)
    # ... after this long (call time) on G.711, unless the far end re-INVITEd first, as a
    # receiving gateway does once it hears the fax tones (0: at once).
    t38_delay_s: float = 0.0
    hang_up: bool = True  # BYE when T.30 ends; False: the caller does (after recording)


@dataclass(frozen=True, slots=True)
class LineResult:
    """How a fax call ended: what T.30 reported, on which media, after how long."""

    fax: FaxOutcome
    media: MediaKind
    duration_s: float  # call time from the start of send/receive


DEFAULTS = LineSettings()


class CallOptions(TypedDict, total=False):
    """Per call: ``name`` names its sessions in the logs (default: the Call-ID);
    ``on_session`` is told each session as it starts; ``stop``, once set, ends the fax
    where it is and hangs up (a cancelled fax: the result says what was confirmed);
    ``on_page_confirmed`` is told the session's confirmed pages at each confirmation;
    ``on_page_received`` each received page's report as the page ends."""

    name: str
    on_session: SessionHook
    on_page_confirmed: PageHook | None
    on_page_received: ReceivedHook | None
    stop: asyncio.Event


async def send(
    call: Call, fax: CallSettings, line: LineSettings = DEFAULTS, **options: Unpack[CallOptions]
) -> LineResult:
    """Send ``fax.file`` (a checked fax TIFF) over ``call``."""
    return await _run(call, Role.SEND, fax, line, **options)


async def receive(
    call: Call, fax: CallSettings, line: LineSettings = DEFAULTS, **options: Unpack[CallOptions]
) -> LineResult:
    """Receive a fax over ``call`` into ``fax.file`` (whatever pages arrive)."""
    return await _run(call, Role.RECEIVE, fax, line, **options)


async def _run(
    call: Call,
    role: Role,
    fax: CallSettings,
    line: LineSettings,
    *,
    name: str = "",
    on_session: SessionHook | None = None,
    on_page_confirmed: PageHook | None = None,
    on_page_received: ReceivedHook | None = None,
    stop: asyncio.Event | None = None,
) -> LineResult:
    loop = asyncio.get_running_loop()
    started = loop.time()
    label = name or call.call_id

    def session(kind: MediaKind) -> FaxEngine:
        engine: FaxEngine
        if kind == "t38":
            engine = T38Session(role, fax, name=f"t38-{label}")
        else:
            engine = FaxSession(role, fax, name=f"fax-{label}")
        engine.on_page_confirmed = on_page_confirmed
        engine.on_page_received = on_page_received
        if on_session is not None:
            on_session(kind, engine)
        return engine

    watchdog = asyncio.create_task(hang_up_when_silent(call, line.silence_s))
    ask_t38: asyncio.Task[None] | None = None
    try:
        if line.request_t38 and has_clock(call.pace):
            if line.t38_delay_s > 0:
                ask_t38 = asyncio.create_task(_t38_later(call, line.t38_delay_s))
            else:
                with contextlib.suppress(CallEnded):
                    await call.request_t38()
        outcome = await run_fax_over_call(
            call, session, max_seconds=line.max_call_s, hangup=line.hang_up, stop=stop
        )
    finally:
        watchdog.cancel()
        if ask_t38 is not None:
            ask_t38.cancel()
        if line.hang_up and not call.is_ended:  # cancelled: never leave the call up
            with contextlib.suppress(Exception):
                await asyncio.shield(call.hangup())
    return LineResult(outcome, call.media_kind, call_seconds(loop.time() - started, call.pace))


async def _t38_later(call: Call, delay_s: float) -> None:
    """Ask for T.38 after ``delay_s`` of call time, unless the call got there already."""
    await asyncio.sleep(real_seconds(delay_s, call.pace))
    if not call.is_ended and call.media_kind != "t38":
        with contextlib.suppress(CallEnded):
            await call.request_t38()
