"""Shared pieces of the pstn-sim tests: numbers, a sender, a stand-in inbound receiver."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faxbox.fax.line.pump import SessionFactory, run_fax_over_call
from faxbox.fax.outcome import FaxOutcome
from faxbox.fax.session import CallSettings, FaxEngine, FaxSession, T38Session
from faxbox.fax.sip.dialog import Call
from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.sdp import MediaKind
from faxbox.fax.sip.ua import UserAgent
from faxbox.pstn_sim.records import CallRecord
from faxbox.pstn_sim.scenarios import DEFAULT_SCENARIOS, Behaviour, Scenario
from faxbox.pstn_sim.service import RunningSimulator

CALLER = "+12125550100"
RECEIVE = "+12125550101"
BUSY = "+12125550111"
NO_ANSWER = "+12125550121"
REJECT = "+12125550131"
DROP = "+12125550141"
LOSSY = "+12125550151"
HUMAN = "+12125550161"
REFUSE_T38 = "+12125550171"
FAXBOX = "+16465550123"  # forwarded to the inbound receiver
LOSSY_T38 = "+12125550199"  # an extra row: 2 % loss, for T.38 with UDPTL redundancy


def factory(role: str, file: Path, identity: str) -> SessionFactory:
    def make(kind: MediaKind) -> FaxEngine:
        config = CallSettings(file=file, local_identity=identity)
        if kind == "t38":
            return T38Session(role, config, name=f"test-t38-{role}")
        return FaxSession(role, config, name=f"test-fax-{role}")

    return make


@dataclass
class Receiver:
    """Our inbound receiver's stand-in: answers (or refuses) and receives faxes."""

    ua: UserAgent
    directory: Path
    mode: str = "receive"  # receive | busy | refuse_t38 | slow (answers after 1 s)
    results: asyncio.Queue[tuple[IncomingCall, Call, FaxOutcome, Path]] = field(
        default_factory=asyncio.Queue
    )
    count: int = 0
    # The next this many INVITEs get 503 with Retry-After: 1 (an overload, an outage).
    unavailable: int = 0

    async def handle(self, incoming: IncomingCall) -> None:
        if self.mode == "busy":
            await incoming.reject(486)
            return
        if self.unavailable > 0:
            self.unavailable -= 1
            await incoming.reject(503, "Service Unavailable", (("Retry-After", "1"),))
            return
        incoming.ring()
        if self.mode == "slow":
            await asyncio.sleep(1)
        call = await incoming.answer()
        call.accept_t38 = self.mode != "refuse_t38"
        self.count += 1
        path = self.directory / f"in-{self.count}.tif"
        outcome = await run_fax_over_call(call, factory("receive", path, "INBOUND"))
        self.results.put_nowait((incoming, call, outcome, path))


TABLE = (
    *DEFAULT_SCENARIOS,
    Scenario(pattern=r"^\+12125550199$", behaviour=Behaviour.LOSSY, loss=0.02, seed=7),
)


async def send(
    caller: UserAgent, sim: RunningSimulator, to: str, document: Path, *, t38: bool = False
) -> tuple[FaxOutcome, Call, CallRecord]:
    call = await caller.dial(sim.sip_uri, CALLER, to)
    if t38:
        await call.request_t38()
    outcome = await run_fax_over_call(call, factory("send", document, "CALLER"))
    [record] = await asyncio.wait_for(sim.calls.wait_for(to, count=1), 10)
    return outcome, call, record


def assert_sent(outcome: FaxOutcome, pages: int = 3) -> None:
    assert outcome.success, outcome
    assert outcome.completion_name == "T30_ERR_OK"
    assert outcome.pages_transferred == pages


def http_json(url: str, data: dict[str, Any] | None = None) -> Any:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
        return raw if response.headers["Content-Type"] == "image/tiff" else json.loads(raw)
