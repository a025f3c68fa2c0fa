"""Our user agent against PJSIP (PyPI ``pjsua2-python``), carrier equipment nobody here wrote.

PJSIP cannot speak T.30, so these check the signalling and the media path: PRACK both
ways (PJSIP requires 100rel), RFC 4028 session timers refreshing at least twice in a
call, both as refresher and as the refreshed side, a re-INVITE that moves PJSIP's media
to a new port (our RTP must follow it: PJSIP's received-packet count keeps growing),
and glare: PJSIP's re-INVITE and ours cross, both get 491, ours is sent again after the
RFC 3261 back-off and ends as it should (488: PJSIP has no T.38), the call stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from faxbox.fax.sip.dialog import Call
from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.message import SipRequest, SipResponse, parse_message
from faxbox.fax.sip.rtp import silence
from faxbox.fax.sip.session_timer import SessionTimerSettings
from faxbox.fax.sip.transport import Hop
from faxbox.fax.sip.ua import UserAgent
from tests.peers.pjsip import Event, PjsipAgent, pjsip_agent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TIMER = SessionTimerSettings(expires_s=90, min_se_s=90)


@pytest.fixture
async def ua() -> AsyncIterator[UserAgent]:
    agent = await UserAgent.start(pace=1.0, user="faxbox", session_timer=TIMER)
    yield agent
    await agent.close()


def _messages(raw: list[bytes]) -> list[SipRequest | SipResponse]:
    return [parse_message(m) for m in raw]


def tsx(method: str, role: str, status: int | None = None) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        return (
            event["ev"] == "tsx"
            and event["method"] == method
            and event["role"] == role
            and (status is None or event["status"] == status)
        )

    return match


@contextlib.asynccontextmanager
async def talking(call: Call) -> AsyncIterator[None]:
    """Send RTP (silence, real time) for as long as the block runs."""

    async def pump() -> None:
        while not call.is_ended:
            await call.send_audio(silence())

    task = asyncio.create_task(pump())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def answered_from_pjsip(ua: UserAgent, agent: PjsipAgent) -> Call:
    calls: asyncio.Queue[Call] = asyncio.Queue()

    async def on_call(incoming: IncomingCall) -> None:
        incoming.ring()
        calls.put_nowait(await incoming.answer())

    ua.listen(on_call)
    await agent.send(op="call", uri=ua.uri)
    call = await asyncio.wait_for(calls.get(), 10)
    await agent.wait(lambda e: e["ev"] == "state" and e["state"] == "CONFIRMED")
    return call


async def packets_grow(agent: PjsipAgent, seconds: float = 1.0) -> tuple[int, int]:
    before = (await agent.info())["rx_packets"]
    await asyncio.sleep(seconds)
    after = (await agent.info())["rx_packets"]
    return before, after


async def test_prack_when_pjsip_calls_us(ua: UserAgent, tmp_path: Path) -> None:
    async with pjsip_agent(tmp_path, prack="mandatory") as agent:
        call = await answered_from_pjsip(ua, agent)
        invite = next(m for m in _messages(ua.received) if isinstance(m, SipRequest))
        assert "100rel" in invite.headers.tokens("Require")
        [ringing] = [
            m for m in _messages(ua.sent) if isinstance(m, SipResponse) and m.status == 180
        ]
        assert "100rel" in ringing.headers.tokens("Require")
        assert ringing.headers.get("RSeq")
        await agent.wait(tsx("PRACK", "uac", 200))
        async with talking(call):
            before, after = await packets_grow(agent)
        assert after > before
        await call.hangup()
        await agent.wait(lambda e: e["ev"] == "state" and e["state"].startswith("DISCONN"))


async def test_prack_when_we_call_pjsip(ua: UserAgent, tmp_path: Path) -> None:
    async with pjsip_agent(tmp_path, prack="mandatory") as agent:
        call = await ua.dial(agent.uri, "+12125550100", "pjsip", answer_timeout=10)
        pracks = [
            m for m in _messages(ua.sent) if isinstance(m, SipRequest) and m.method == "PRACK"
        ]
        assert len(pracks) == 1
        assert pracks[0].headers.get("RAck")
        await agent.wait(tsx("PRACK", "uas", 200))
        async with talking(call):
            before, after = await packets_grow(agent)
        assert after > before
        await call.hangup()


async def test_session_timers_refresh_twice_both_ways(ua: UserAgent, tmp_path: Path) -> None:
    """Two calls at once, 100 s: PJSIP refreshes one (it called us), we refresh the
    other (we called it); each is refreshed twice and both stay up."""
    async with (
        pjsip_agent(tmp_path / "a", timer="always", session_expires=90, min_se=90) as caller,
        pjsip_agent(tmp_path / "b", timer="always", session_expires=90, min_se=90) as callee,
    ):
        theirs = await answered_from_pjsip(ua, caller)
        ours = await ua.dial(callee.uri, "+12125550100", "pjsip", answer_timeout=10)
        assert theirs.timer is not None
        assert not theirs.timer.we_refresh
        assert ours.timer is not None
        assert ours.timer.we_refresh
        async with talking(theirs), talking(ours):
            await asyncio.sleep(98)
            assert not theirs.is_ended, theirs.end_reason
            assert not ours.is_ended, ours.end_reason
            assert theirs.refreshes >= 2
            assert ours.refreshes >= 2
            refreshed_by_pjsip = caller.seen(tsx("UPDATE", "uac", 200)) + caller.seen(
                tsx("INVITE", "uac", 200)
            )
            assert len(refreshed_by_pjsip) >= 2, caller.events
            refreshed_by_us = callee.seen(tsx("UPDATE", "uas", 200)) + callee.seen(
                tsx("INVITE", "uas", 200)
            )
            assert len(refreshed_by_us) >= 2, callee.events
            for agent in (caller, callee):
                before, after = await packets_grow(agent, 0.5)
                assert after > before
        await theirs.hangup()
        await ours.hangup()


async def test_reinvite_that_moves_media_retargets_our_rtp(ua: UserAgent, tmp_path: Path) -> None:
    async with pjsip_agent(tmp_path, prack="optional") as agent:
        call = await ua.dial(agent.uri, "+12125550100", "pjsip", answer_timeout=10)
        async with talking(call):
            first = await agent.info()
            assert call.rtp.remote is not None
            assert f"{call.rtp.remote[0]}:{call.rtp.remote[1]}" == first["local_rtp"]
            await agent.send(op="reinvite", move=True)
            await agent.wait(tsx("INVITE", "uac", 200))
            await asyncio.sleep(0.5)
            moved = await agent.info()
            assert moved["local_rtp"] != first["local_rtp"], (first, moved)
            assert f"{call.rtp.remote[0]}:{call.rtp.remote[1]}" == moved["local_rtp"]
            before, after = await packets_grow(agent)
            assert after > before  # our RTP arrives at the new port
        await call.hangup()


async def test_glare_both_491_then_ours_again_after_backoff(ua: UserAgent, tmp_path: Path) -> None:
    async with pjsip_agent(tmp_path, prack="optional", timer="off") as agent:
        call = await ua.dial(agent.uri, "+12125550100", "pjsip", answer_timeout=10)
        ours: list[asyncio.Task[bool]] = []
        held: list[tuple[bytes, Hop]] = []
        receive, send = ua.receive, ua.transactions.send

        def crossing(data: bytes, hop: Hop) -> None:
            message = parse_message(data)
            reinvite = isinstance(message, SipRequest) and message.method == "INVITE"
            if not ours and reinvite and message.to.tag:
                # Their re-INVITE: still on the wire while ours leaves.
                held.append((data, hop))
                ours.append(asyncio.ensure_future(call.request_t38()))
                return
            receive(data, hop)

        def sending(data: bytes, hop: Hop) -> None:
            send(data, hop)
            if held and data.startswith(b"INVITE "):  # ours is out: theirs lands now
                receive(*held.pop())

        for transport in ua.transports.values():
            transport.on_message = crossing  # type: ignore[attr-defined]
        ua.transactions.send = sending
        async with talking(call):
            await agent.send(op="reinvite", move=False)
            await agent.wait(tsx("INVITE", "uac", 491))
            assert ours
            accepted = await asyncio.wait_for(ours[0], 15)
            assert not accepted  # PJSIP has no T.38: 488 once the glare is over
            statuses = [
                m.status
                for m in _messages(ua.received)
                if isinstance(m, SipResponse) and m.cseq.method == "INVITE"
            ]
            assert 491 in statuses
            assert statuses[-1] == 488
            our_491 = [
                m for m in _messages(ua.sent) if isinstance(m, SipResponse) and m.status == 491
            ]
            assert our_491
            assert not call.is_ended
            before, after = await packets_grow(agent)
            assert after > before
        await call.hangup()
