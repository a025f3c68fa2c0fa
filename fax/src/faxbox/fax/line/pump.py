"""The fax pump: a spandsp session moved over a call's media until T.30 ends.

Audio: one 160-sample block in and one out per 20 ms slot (``recv_audio`` is the clock;
unpaced, the two ends run in lock-step). T.38: the loop wakes every few slots of the
line clock, hands the terminal what arrived and sends what it produced. A re-INVITE
that switches the media mid-call replaces the session (T.30 starts again on the new
media, as a gateway would). ``faxbox.fax.line`` is the way in for services; this module
is what it runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from faxbox.fax.outcome import FaxOutcome
from faxbox.fax.session import FaxEngine, FaxSession, T38Session
from faxbox.fax.sip.dialog import Call, CallEnded
from faxbox.fax.sip.rtp import Clock, silence
from faxbox.fax.sip.sdp import MediaKind

log = logging.getLogger("faxbox.fax.line")

SessionFactory = Callable[[MediaKind], FaxEngine]
LINGER_BLOCKS = 25  # 0.5 s of call time after phase E before BYE, so the last frame arrives
# T.38 has no per-packet rhythm: the loop wakes every 3 blocks (60 ms of call time) and
# lets spandsp's terminal step 20 ms at a time within it (it sends at most one chunk a
# step). A third of the wake-ups, timer and packet handling of waking every 20 ms, for
# both ends of every call; T.30's timers are seconds, and UDPTL takes bursts.
T38_BLOCKS_PER_WAKE = 3


def _kind(session: FaxEngine) -> MediaKind:
    return "t38" if isinstance(session, T38Session) else "audio"


async def run_fax_over_call(
    call: Call,
    session: FaxEngine | SessionFactory,
    *,
    max_seconds: float = 1800.0,
    hangup: bool = True,
    stop: asyncio.Event | None = None,
) -> FaxOutcome:
    """Pump a fax session over ``call``'s media until phase E, then hang up.

    ``session`` is a ready ``FaxSession`` (audio) or ``T38Session``, or a factory called
    with the call's media kind: with a factory, a re-INVITE that switches the media
    mid-call replaces the session (the T.30 exchange starts again on the new media, as
    a gateway would); the sessions it made are closed here. The remote hanging up ends
    T.30 after the buffered media was heard (a BYE overtaking the DCN is common).

    ``stop`` set (the sender cancelled the fax) ends T.30 where it is, at the next 20 ms
    slot: phase E runs with what was confirmed so far, and the call is hung up with a
    BYE as after any other ending.
    """
    factory: SessionFactory | None = None
    if isinstance(session, FaxSession | T38Session):
        current: FaxEngine = session
    else:
        factory = session
        current = factory(call.media_kind)
    made: list[FaxEngine] = [current] if factory is not None else []
    blocks = 0
    max_blocks = int(max_seconds * 50)
    clock = Clock(call.pace)
    rx: npt.NDArray[np.int16] = silence()
    linger = 0
    try:
        while True:
            if call.media_kind != _kind(current) and not current.done:
                if factory is None:
                    raise RuntimeError(f"the call switched to {call.media_kind}: pass a factory")
                log.info("%s: media is now %s, new session", call.call_id, call.media_kind)
                current.close()  # before the new one opens the same file
                current = factory(call.media_kind)
                made.append(current)
                rx = silence()
            step = 1 if isinstance(current, FaxSession) else T38_BLOCKS_PER_WAKE
            if stop is not None and stop.is_set() and not current.done:
                log.info("%s: stopped (cancelled), hanging up", call.call_id)
                current.hangup()
                break
            if current.done:
                linger += step
                if linger > LINGER_BLOCKS or call.is_ended:
                    break
            if blocks >= max_blocks:
                log.warning("%s: no phase E after %s s, hanging up", call.call_id, max_seconds)
                current.hangup()
                break
            blocks += step
            try:
                if isinstance(current, FaxSession):
                    tx = current.process(rx)
                    await call.send_audio(tx)
                    rx = await call.recv_audio()
                else:
                    if not call.pace:
                        # Lock-step needs one packet per slot each way; T.38 has no such
                        # rhythm, so two unpaced terminals would time each other out.
                        raise ValueError("T.38 needs a media clock: use a pace > 0")
                    await clock.wait_slot(step)
                    _t38_step(call, current, step)
                    if call.is_ended and call.udptl is not None and call.udptl.closed:
                        # Remote hung up: what had arrived is in; give T.30 its last chance.
                        _t38_step(call, current, 1)
                        raise CallEnded(call.end_reason)
            except CallEnded:
                if not current.done:
                    current.hangup()
                break
    finally:
        if hangup and not call.is_ended:
            await call.hangup()
    try:
        return current.result
    finally:
        for made_session in made:
            made_session.close()


def _t38_step(call: Call, session: T38Session, blocks: int) -> None:
    for seq, ifp in call.take_ifps():
        session.rx_packet(ifp, seq)
    for _ in range(blocks):
        session.tick(160)
    if call.udptl is not None and not call.is_ended:
        for packet in session.take_packets():
            call.udptl.send_ifp(packet.ifp, packet.seq, packet.copies)
