"""pstn-sim's ``forward``: a caller → the simulator (B2BUA) → our inbound receiver.

Run at pace 10 with 30-packet jitter buffers: 60 ms of real time per leg to ride out
the event-loop stalls of this shared 2-core machine (four G.711 pumps run in this one
test process; with the SIP layer's 20 ms, under load, underruns cut gaps into the modem
signal and calls failed with T30_ERR_TX_ECMPHD / CALLDROPPED), while the line-time delay
stays at 0.6 s per leg: the four legs of a command/response round trip must stay inside
T.30's 3 s response timer, which pace 20 with the same real-time margin would not.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from faxbox.fax.sip.ua import CallFailed, FailureKind, UserAgent
from faxbox.pstn_sim.service import RunningSimulator

if TYPE_CHECKING:
    from tests.integration.pstn_sim._pstn_support import (
        CALLER,
        FAXBOX,
        Receiver,
        assert_sent,
        send,
    )
    from tests.integration.sip._pages import (
        assert_pages_identical,
    )
else:
    from _pstn_support import (
        CALLER,
        FAXBOX,
        Receiver,
        assert_sent,
        send,
    )

    from tests.integration.sip._pages import assert_pages_identical

pytestmark = pytest.mark.timeout(60)
PACE = 10
JITTER_PREFILL = 30  # 60 ms of real time, 0.6 s of line time per leg


# --- forward: through the B2BUA to our inbound receiver ---------------------------------


@pytest.mark.parametrize("t38", [False, True], ids=["g711", "t38"])
async def test_forward_to_the_inbound_receiver(
    caller: UserAgent,
    sim: RunningSimulator,
    fresh_receiver: Receiver,
    three_pages: Path,
    t38: bool,
) -> None:
    outcome, call, record = await send(caller, sim, FAXBOX, three_pages, t38=t38)
    assert_sent(outcome)
    assert outcome.remote_id == "INBOUND"  # the far end is the receiver, not the sim
    incoming, b_leg, got, path = await asyncio.wait_for(fresh_receiver.results.get(), 10)
    assert (incoming.from_number, incoming.to_number) == (CALLER, FAXBOX)
    assert got.success
    assert got.remote_id == "CALLER"
    assert_pages_identical(three_pages, path)
    media = "t38" if t38 else "audio"
    assert call.media_kind == b_leg.media_kind == media
    assert record.behaviour == "forward"
    assert record.media == ("t38" if t38 else "g711")


async def test_forward_t38_refused_by_the_receiver_stays_on_audio(
    caller: UserAgent, sim: RunningSimulator, fresh_receiver: Receiver, three_pages: Path
) -> None:
    fresh_receiver.mode = "refuse_t38"
    outcome, call, record = await send(caller, sim, FAXBOX, three_pages, t38=True)
    assert_sent(outcome)
    _, b_leg, got, path = await asyncio.wait_for(fresh_receiver.results.get(), 10)
    assert got.success
    assert_pages_identical(three_pages, path)
    assert call.media_kind == b_leg.media_kind == "audio"
    assert record.media == "g711"


async def test_forward_relays_busy(
    caller: UserAgent, sim: RunningSimulator, fresh_receiver: Receiver
) -> None:
    fresh_receiver.mode = "busy"
    with pytest.raises(CallFailed) as failed:
        await caller.dial(sim.sip_uri, CALLER, FAXBOX)
    assert failed.value.status == 486


async def test_forward_caller_gives_up_while_the_receiver_rings(
    caller: UserAgent, sim: RunningSimulator, fresh_receiver: Receiver
) -> None:
    fresh_receiver.mode = "slow"
    with pytest.raises(CallFailed) as failed:
        await caller.dial(sim.sip_uri, CALLER, FAXBOX, answer_timeout=0.3)
    assert failed.value.kind is FailureKind.NO_ANSWER
    [record] = await asyncio.wait_for(sim.calls.wait_for(FAXBOX), 5)
    assert record.sip_status == 487
    # The receiver answered late: the simulator hangs that leg up at once.
    _, b_leg, got, _ = await asyncio.wait_for(fresh_receiver.results.get(), 10)
    assert b_leg.remote_hung_up
    assert not got.success
