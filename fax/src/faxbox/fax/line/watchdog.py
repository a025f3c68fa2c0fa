"""The silence watchdog: hang up a call on which nothing has arrived for too long.

A far end that vanishes without a BYE (killed, unplugged, its network gone) leaves a
T.38 terminal waiting forever: it never reaches phase E on its own, and the call would
hold its channel for the whole call limit. T.30 itself is never silent longer than its
T1 (35 s), so a minute of call time without a single RTP or UDPTL packet cannot cut a
live fax.
"""

from __future__ import annotations

import asyncio
import logging

from faxbox.fax.line.pace import real_seconds
from faxbox.fax.sip.dialog import Call

log = logging.getLogger("faxbox.fax.line")


async def hang_up_when_silent(call: Call, silence_s: float) -> None:
    """Hang up ``call`` once no media packet has arrived for ``silence_s`` of call time."""
    step = max(silence_s / 6, 0.5)  # call time between looks
    last, quiet = call.packets_received, 0.0
    while not call.is_ended:
        await asyncio.sleep(real_seconds(step, call.pace))
        now = call.packets_received
        quiet = 0.0 if now != last else quiet + step
        last = now
        if quiet >= silence_s:
            log.warning("%s: no media for %.0f s of call time, hanging up", call.call_id, quiet)
            await call.hangup()
            return
