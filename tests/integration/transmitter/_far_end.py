"""Remote fax machines for the transmitter tests, built from our own SIP user agent and engine.

``FarEnd`` listens on one UDP port and behaves per dialled number: it receives the fax
(and keeps what arrived), answers busy, rings without answering, drops the line during
a given page, or refuses T.38. Every INVITE and every reception is recorded, so a test
can say how often a fax was on the line and how often it arrived in full.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from faxbox.fax.line.pump import run_fax_over_call
from faxbox.fax.outcome import FaxOutcome
from faxbox.fax.session import CallSettings, FaxEngine, FaxSession, T38Session
from faxbox.fax.sip.dialog import Call
from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.sdp import MediaKind
from faxbox.fax.sip.ua import UserAgent


@dataclass(frozen=True)
class Behaviour:
    kind: str = "receive"  # receive | busy | no_answer | drop_on_page | refuse_t38 | reject
    page: int = 2  # drop_on_page: the page during which the line goes dead
    busy_first: int = 0  # receive, but answer busy to the first N calls
    status: int = 486


@dataclass
class Reception:
    number: str
    outcome: FaxOutcome
    file: Path
    media: MediaKind

    @property
    def complete(self) -> bool:
        return self.outcome.success


@dataclass
class FarEnd:
    ua: UserAgent
    directory: Path
    table: list[tuple[str, Behaviour]] = field(default_factory=list)
    invites: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)
    receptions: list[Reception] = field(default_factory=list)
    active: int = 0
    # Call time after which the far end gives up: a T.38 terminal whose peer vanished
    # (no BYE, no packets) never reaches phase E by itself.
    max_call_s: float = 600.0
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    async def start(cls, directory: Path, pace: float) -> FarEnd:
        ua = await UserAgent.start(pace=pace, user="farend")
        far = cls(ua, directory)
        ua.listen(far._handle)
        return far

    @property
    def uri(self) -> str:
        return self.ua.uri

    def behave(self, pattern: str, behaviour: Behaviour) -> None:
        self.table.insert(0, (pattern, behaviour))

    def behaviour_for(self, number: str) -> Behaviour:
        for pattern, behaviour in self.table:
            if re.search(pattern, number):
                return behaviour
        return Behaviour()

    def receptions_of(self, number: str) -> list[Reception]:
        return [r for r in self.receptions if r.number == number]

    def complete_receptions(self, number: str) -> list[Reception]:
        return [r for r in self.receptions if r.number == number and r.complete]

    async def _handle(self, incoming: IncomingCall) -> None:
        number = incoming.to_number
        self.invites[number] += 1
        behaviour = self.behaviour_for(number)
        if behaviour.kind == "busy" or self.invites[number] <= behaviour.busy_first:
            await incoming.reject(486)
            return
        if behaviour.kind == "reject":
            await incoming.reject(behaviour.status)
            return
        if behaviour.kind == "no_answer":
            incoming.ring()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(incoming.cancelled.wait(), 120)
            return
        incoming.ring()
        call = await incoming.answer()
        self.answered[number] += 1
        if behaviour.kind == "refuse_t38":
            call.accept_t38 = False
        file = self.directory / f"rx-{next(self._seq)}.tif"
        sessions: list[FaxEngine] = []

        def make(kind: MediaKind) -> FaxEngine:
            settings = CallSettings(file=file, local_identity="FAR END")
            session: FaxEngine
            if kind == "t38":
                session = T38Session("receive", settings, name="far-t38")
            else:
                session = FaxSession("receive", settings, name="far-fax")
            sessions.append(session)
            return session

        dropper = None
        if behaviour.kind == "drop_on_page":
            dropper = asyncio.create_task(self._drop_during(call, sessions, behaviour.page))
        self.active += 1
        try:
            outcome = await run_fax_over_call(call, make, max_seconds=self.max_call_s)
        finally:
            self.active -= 1
            if dropper is not None:
                dropper.cancel()
        self.receptions.append(Reception(number, outcome, file, call.media_kind))

    @staticmethod
    async def _drop_during(call: Call, sessions: list[FaxEngine], page: int) -> None:
        while not call.is_ended:
            if sessions and len(sessions[-1].pages) >= page - 1:
                # A few seconds of call time into the page: the line goes dead.
                await asyncio.sleep(3 / max(call.pace, 1))
                await call.hangup()
                return
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        await self.ua.close()
