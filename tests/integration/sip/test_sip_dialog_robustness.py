"""What keeps a fax call up and its pages intact while the dialog is busy (our stack on
both ends, on 127.0.0.1).

- session refreshes every second or two (RFC 4028 with a short interval, both ends
  agreeing) during a 3-page T.38 fax: answered without touching T.30, pages identical;
- T.38 offered in the INVITE itself: the callee takes it at once, no re-INVITE;
- our own T.38 re-INVITE after ``t38_delay_s``, and none when the far end asked first;
- T38FaxUdpEC negotiated (no EC when either side wants none) and honoured (no
  redundant IFPs sent); T38FaxMaxDatagram honoured;
- media ports from a fixed range, given back and reused; the advertised address in
  Via, Contact and SDP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from faxbox.fax.line import LineResult, LineSettings, receive, send
from faxbox.fax.session import CallSettings
from faxbox.fax.sip.dialog import Call
from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.message import SipRequest, parse_message
from faxbox.fax.sip.ports import PortRange
from faxbox.fax.sip.sdp import FEC, NO_EC, REDUNDANCY, SessionDescription, T38Params, answer_t38
from faxbox.fax.sip.session_timer import SessionTimerSettings
from faxbox.fax.sip.ua import CallFailed, UserAgent
from tests.support import free_port

if TYPE_CHECKING:
    from tests.integration.sip._pages import assert_pages_identical, save_fax_tiff, text_page
else:
    from _pages import assert_pages_identical, save_fax_tiff, text_page

pytestmark = pytest.mark.timeout(120)

PACE = 10.0
SHORT = SessionTimerSettings(expires_s=2, min_se_s=2)


@pytest.fixture(scope="module")
def three_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fax_tiff(
        tmp_path_factory.mktemp("doc") / "three.tif", [text_page(n) for n in (1, 2, 3)]
    )


Pair = tuple[UserAgent, UserAgent, "asyncio.Queue[tuple[Call, LineResult]]"]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Pair]]]:
    made: list[UserAgent] = []

    async def make(
        caller_options: dict[str, Any] | None = None,
        callee_options: dict[str, Any] | None = None,
        callee_line: LineSettings | None = None,
    ) -> Pair:
        caller = await UserAgent.start(pace=PACE, **(caller_options or {}))
        callee = await UserAgent.start(pace=PACE, user="callee", **(callee_options or {}))
        made.extend([caller, callee])
        results: asyncio.Queue[tuple[Call, LineResult]] = asyncio.Queue()

        async def on_call(incoming: IncomingCall) -> None:
            incoming.ring()
            call = await incoming.answer()
            out = tmp_path / f"in-{len(made)}-{results.qsize()}.tif"
            result = await receive(
                call, CallSettings(file=out, local_identity="CALLEE"), callee_line or LineSettings()
            )
            results.put_nowait((call, result))

        callee.listen(on_call)
        return caller, callee, results

    yield make
    for ua in made:
        await ua.close()


def reinvites(ua: UserAgent) -> list[SipRequest]:
    return [
        m
        for m in map(parse_message, ua.sent)
        if isinstance(m, SipRequest) and m.method == "INVITE" and m.to.tag
    ]


async def test_session_refreshes_during_a_t38_fax_leave_t30_alone(
    pair: Callable[..., Awaitable[Pair]], three_pages: Path, tmp_path: Path
) -> None:
    caller, callee, results = await pair({"session_timer": SHORT}, {"session_timer": SHORT})
    call = await caller.dial(callee.uri, "100", "200")
    assert call.timer is not None
    assert call.timer.interval_s == 2
    sent = await send(
        call,
        CallSettings(file=three_pages, local_identity="CALLER"),
        LineSettings(request_t38=True),
    )
    remote, got = await asyncio.wait_for(results.get(), 30)
    assert sent.fax.success, sent.fax
    assert got.fax.success, got.fax
    assert sent.media == got.media == "t38"
    # The caller refreshed (UPDATE) every second through the fax; the callee answered.
    assert call.refreshes >= 2
    assert remote.refreshes >= 2
    [received] = await asyncio.to_thread(lambda: list(tmp_path.glob("in-*.tif")))
    assert_pages_identical(three_pages, received)


async def test_t38_in_the_invite_is_taken_at_once(
    pair: Callable[..., Awaitable[Pair]], three_pages: Path
) -> None:
    caller, callee, results = await pair()
    call = await caller.dial(callee.uri, "100", "200", offer_t38=True)
    assert call.media_kind == "t38"  # from the 200 on: no re-INVITE
    sent = await send(call, CallSettings(file=three_pages, local_identity="CALLER"))
    _, got = await asyncio.wait_for(results.get(), 30)
    assert sent.fax.success, sent.fax
    assert got.fax.success
    assert not reinvites(caller)
    assert not reinvites(callee)
    [invite] = [
        m
        for m in map(parse_message, caller.sent)
        if isinstance(m, SipRequest) and m.method == "INVITE"
    ]
    offer = SessionDescription.parse(invite.body)
    assert [m.media for m in offer.media] == ["audio", "image"]


async def test_our_t38_reinvite_waits_for_the_far_end_then_goes(
    pair: Callable[..., Awaitable[Pair]], three_pages: Path
) -> None:
    # The far end asks for T.38 at once: we accept, and never send our own.
    caller, callee, results = await pair(callee_line=LineSettings(request_t38=True))
    call = await caller.dial(callee.uri, "100", "200")
    sent = await send(
        call,
        CallSettings(file=three_pages, local_identity="CALLER"),
        LineSettings(request_t38=True, t38_delay_s=20),
    )
    await asyncio.wait_for(results.get(), 30)
    assert sent.fax.success
    assert sent.media == "t38"
    assert not reinvites(caller)
    assert len(reinvites(callee)) == 1

    # A far end that never asks: ours goes after the delay (4 s of call time).
    caller, callee, results = await pair()
    call = await caller.dial(callee.uri, "100", "200")
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = await send(
        call,
        CallSettings(file=three_pages, local_identity="CALLER"),
        LineSettings(request_t38=True, t38_delay_s=4),
    )
    await asyncio.wait_for(results.get(), 30)
    assert sent.fax.success
    assert sent.media == "t38"
    assert len(reinvites(caller)) == 1
    assert not reinvites(callee)
    assert loop.time() - started >= 4 / PACE


def test_udp_ec_is_never_stronger_than_either_side_asks() -> None:
    ours = T38Params()
    assert answer_t38(T38Params(udp_ec=FEC), ours).udp_ec == REDUNDANCY
    assert answer_t38(T38Params(udp_ec=NO_EC), ours).udp_ec == NO_EC
    assert answer_t38(T38Params(udp_ec=REDUNDANCY), T38Params(udp_ec=NO_EC)).udp_ec == NO_EC
    assert answer_t38(T38Params(max_datagram=160), ours).max_datagram == ours.max_datagram


async def test_no_ec_and_max_datagram_are_honoured(
    pair: Callable[..., Awaitable[Pair]], three_pages: Path
) -> None:
    caller, callee, results = await pair(
        callee_options={"t38": T38Params(udp_ec=NO_EC, max_datagram=160)}
    )
    call = await caller.dial(callee.uri, "100", "200")
    assert await call.request_t38()
    assert call.t38_params is not None
    assert call.t38_params.udp_ec == NO_EC
    assert call.udptl is not None
    assert call.udptl.encoder.redundancy == 0  # no secondary IFPs on the wire
    assert call.udptl.encoder.max_datagram == 160
    sent = await send(call, CallSettings(file=three_pages, local_identity="CALLER"))
    _, got = await asyncio.wait_for(results.get(), 30)
    assert sent.fax.success
    assert got.fax.success
    [remote] = [c for c in callee.calls if c.call_id == call.call_id]
    assert remote.udptl is not None
    assert remote.udptl.encoder.redundancy == 0


async def test_media_ports_come_from_the_range_and_are_reused() -> None:
    low = free_port() // 2 * 2
    low = min(max(low, 20000), 60000)
    ports = PortRange(low, low + 7)
    caller = await UserAgent.start(pace=0, media_ports=ports)
    callee = await UserAgent.start(pace=0)

    async def answer(incoming: IncomingCall) -> None:
        await incoming.answer()

    callee.listen(answer)
    try:
        seen: set[int] = set()
        for _ in range(6):
            call = await caller.dial(callee.uri, "100", "200")
            assert low <= call.rtp.local_port <= low + 7
            assert call.rtp.local_port % 2 == 0
            seen.add(call.rtp.local_port)
            await call.hangup()
            assert ports.in_use == 0  # given back with the call
        assert len(seen) == 4  # four even ports, round and round
    finally:
        await caller.close()
        await callee.close()


async def test_the_advertised_address_is_in_via_contact_and_sdp() -> None:
    caller = await UserAgent.start(pace=0, advertised_address="203.0.113.7")
    callee = await UserAgent.start(pace=0)
    seen: asyncio.Queue[SipRequest] = asyncio.Queue()

    async def refuse(incoming: IncomingCall) -> None:
        seen.put_nowait(incoming.request)
        await incoming.reject(486)

    callee.listen(refuse)
    try:
        with pytest.raises(CallFailed):
            await caller.dial(callee.uri, "100", "200")
        invite = await seen.get()
        assert invite.top_via.host == "203.0.113.7"
        assert "@203.0.113.7:" in (invite.headers.get("Contact") or "")
        offer = SessionDescription.parse(invite.body)
        assert offer.address == "203.0.113.7"
    finally:
        await caller.close()
        await callee.close()
