"""The user agent against itself and against a hand-driven UDP socket, on 127.0.0.1.

Signalling only (no fax): answer/reject/cancel, BYE both ways, re-INVITE to T.38 from
either side, and the UDP retransmission rules, with a short T1 to keep tests quick.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from faxbox.fax.sip.dialog import CallEnded, EventKind
from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.message import SipRequest, SipResponse, parse_message
from faxbox.fax.sip.rtp import g711_decode, g711_encode
from faxbox.fax.sip.sdp import PCMA, PCMU
from faxbox.fax.sip.ua import CallFailed, FailureKind, UserAgent

pytestmark = pytest.mark.timeout(60)
T1 = 0.05


@pytest.fixture
async def pair() -> AsyncIterator[tuple[UserAgent, UserAgent]]:
    caller = await UserAgent.start(t1=T1, pace=0)
    callee = await UserAgent.start(t1=T1, pace=0)
    try:
        yield caller, callee
    finally:
        await caller.close()
        await callee.close()


async def _answering(incoming: IncomingCall) -> None:
    incoming.ring()
    await incoming.answer()


async def test_call_answered_and_hung_up_by_the_caller(
    pair: tuple[UserAgent, UserAgent],
) -> None:
    caller, callee = pair
    answered: asyncio.Future[IncomingCall] = asyncio.get_running_loop().create_future()

    async def handler(incoming: IncomingCall) -> None:
        incoming.ring()
        await incoming.answer()
        answered.set_result(incoming)

    callee.listen(handler)
    progress: list[int] = []
    call = await caller.dial(
        callee.uri,
        "+4930100",
        "+4930200",
        codecs=(PCMA, PCMU),
        on_progress=lambda status, _reason: progress.append(status),
    )
    incoming = await asyncio.wait_for(answered, 5)
    assert progress == [180]
    assert (incoming.from_number, incoming.to_number) == ("+4930100", "+4930200")
    remote = incoming.call
    assert remote is not None
    assert call.payload_type == remote.payload_type == PCMA  # the caller's preference
    assert (call.media_kind, remote.media_kind) == ("audio", "audio")
    assert call.call_id == remote.call_id
    assert (call.local_tag, call.remote_tag) == (remote.remote_tag, remote.local_tag)

    await call.hangup()
    await asyncio.wait_for(remote.ended.wait(), 5)
    assert remote.remote_hung_up
    assert (await remote.events.get()).kind is EventKind.REMOTE_HANGUP
    assert call.is_ended
    assert not call.remote_hung_up


async def test_callee_hangs_up(pair: tuple[UserAgent, UserAgent]) -> None:
    caller, callee = pair

    async def handler(incoming: IncomingCall) -> None:
        call = await incoming.answer()
        await asyncio.sleep(0.05)
        await call.hangup()

    callee.listen(handler)
    call = await caller.dial(callee.uri, "1", "2")
    await asyncio.wait_for(call.ended.wait(), 5)
    assert call.remote_hung_up
    assert (await call.events.get()).kind is EventKind.REMOTE_HANGUP


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (486, FailureKind.BUSY),
        (480, FailureKind.NO_ANSWER),
        (404, FailureKind.BAD_NUMBER),
        (484, FailureKind.BAD_NUMBER),
        (503, FailureKind.UNAVAILABLE),
        (603, FailureKind.REJECTED),
    ],
)
async def test_rejected_calls_raise_call_failed(
    pair: tuple[UserAgent, UserAgent], status: int, kind: FailureKind
) -> None:
    caller, callee = pair

    async def handler(incoming: IncomingCall) -> None:
        await incoming.reject(status)

    callee.listen(handler)
    with pytest.raises(CallFailed) as failed:
        await caller.dial(callee.uri, "1", "2")
    assert failed.value.status == status
    assert failed.value.kind is kind
    assert failed.value.reason


async def test_nobody_listening_is_480(pair: tuple[UserAgent, UserAgent]) -> None:
    caller, callee = pair
    with pytest.raises(CallFailed) as failed:
        await caller.dial(callee.uri, "1", "2")
    assert failed.value.status == 480


async def test_unanswered_call_is_cancelled(pair: tuple[UserAgent, UserAgent]) -> None:
    caller, callee = pair
    seen: list[IncomingCall] = []

    async def handler(incoming: IncomingCall) -> None:
        seen.append(incoming)
        incoming.ring()
        await incoming.cancelled.wait()

    callee.listen(handler)
    started = time.monotonic()
    with pytest.raises(CallFailed) as failed:
        await caller.dial(callee.uri, "1", "2", answer_timeout=0.3)
    assert failed.value.status == 408
    assert failed.value.kind is FailureKind.NO_ANSWER
    assert 0.3 <= time.monotonic() - started < 3
    assert seen
    assert seen[0].cancelled.is_set()
    sent = [parse_message(m) for m in caller.sent]
    methods = [m.method for m in sent if isinstance(m, SipRequest)]
    assert "CANCEL" in methods
    assert methods[-1] == "ACK"  # for the 487


@pytest.mark.parametrize("initiator", ["caller", "callee"])
async def test_reinvite_to_t38_accepted_from_either_side(
    pair: tuple[UserAgent, UserAgent], initiator: str
) -> None:
    caller, callee = pair
    remote_calls: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def handler(incoming: IncomingCall) -> None:
        await incoming.answer()
        remote_calls.put_nowait(incoming)

    callee.listen(handler)
    call = await caller.dial(callee.uri, "1", "2")
    remote = (await asyncio.wait_for(remote_calls.get(), 5)).call
    assert remote is not None
    asker, other = (call, remote) if initiator == "caller" else (remote, call)
    assert await asker.request_t38()
    assert asker.media_kind == "t38"
    await asyncio.sleep(0.05)
    assert other.media_kind == "t38"
    for side in (asker, other):
        event = await asyncio.wait_for(side.events.get(), 5)
        assert (event.kind, event.media) == (EventKind.MEDIA_CHANGED, "t38")
        assert side.t38_params is not None
        assert side.t38_params.rate_management == "transferredTCF"
    assert await asker.request_t38()  # already on T.38: nothing to do
    # T.38 flows both ways over UDPTL.
    await asker.send_ifp(b"\x02", 0)
    assert await asyncio.wait_for(other.recv_ifp(), 5) == (0, b"\x02")
    await other.send_ifp(b"\x00\x01", 0, copies=3)
    assert await asyncio.wait_for(asker.recv_ifp(), 5) == (0, b"\x00\x01")
    await asyncio.sleep(0.05)
    assert asker.take_ifps() == []  # the copies were dropped
    await call.hangup()


async def test_reinvite_refused_with_488_stays_on_audio(
    pair: tuple[UserAgent, UserAgent],
) -> None:
    caller, callee = pair
    callee.accept_t38 = False
    remote_calls: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def handler(incoming: IncomingCall) -> None:
        await incoming.answer()
        remote_calls.put_nowait(incoming)

    callee.listen(handler)
    call = await caller.dial(callee.uri, "1", "2")
    remote = (await asyncio.wait_for(remote_calls.get(), 5)).call
    assert remote is not None
    assert not await call.request_t38()
    event = await call.events.get()
    assert (event.kind, event.status, event.media) == (EventKind.REINVITE_REFUSED, 488, "audio")
    assert call.media_kind == remote.media_kind == "audio"
    assert (await remote.events.get()).kind is EventKind.REINVITE_REFUSED
    # The refused re-INVITE's 488 was ACKed in its transaction; the call goes on.
    await asyncio.sleep(0.05)
    sent = [parse_message(m) for m in caller.sent]
    assert isinstance(sent[-1], SipRequest)
    assert sent[-1].method == "ACK"
    assert not call.is_ended
    await call.hangup()
    await asyncio.wait_for(remote.ended.wait(), 5)


class RawPeer(asyncio.DatagramProtocol):
    """A UDP socket we drive by hand, to see exactly what goes over the wire."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[SipRequest | SipResponse, float]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.peer: tuple[str, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.peer = addr
        self.messages.put_nowait((parse_message(data), time.monotonic()))

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def next(self) -> tuple[SipRequest | SipResponse, float]:
        return await asyncio.wait_for(self.messages.get(), 5)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


@pytest.fixture
async def raw() -> AsyncIterator[RawPeer]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(RawPeer, local_addr=("127.0.0.1", 0))
    yield peer
    transport.close()


def _reply(request: SipRequest, status: int, reason: str, tag: str = "peer") -> bytes:
    response = SipResponse(status=status, reason=reason)
    for via in request.headers.get_all("Via"):
        response.headers.add("Via", via)
    response.headers.add("From", request.headers.get("From") or "")
    response.headers.add("To", f"{request.headers.get('To')};tag={tag}")
    response.headers.add("Call-ID", request.call_id)
    response.headers.add("CSeq", str(request.cseq))
    return response.serialize()


async def test_invite_is_retransmitted_and_failures_are_acked(raw: RawPeer) -> None:
    ua = await UserAgent.start(t1=T1)
    try:
        dial = asyncio.create_task(ua.dial(f"sip:127.0.0.1:{raw.port}", "1", "2"))
        first, t_first = await raw.next()
        second, t_second = await raw.next()  # we did not answer: sent again after T1
        third, t_third = await raw.next()  # and again after 2·T1
        assert isinstance(first, SipRequest)
        assert first.method == "INVITE"
        assert bytes(first) == bytes(second) == bytes(third)
        assert t_second - t_first >= T1 * 0.8
        assert t_third - t_second >= 2 * T1 * 0.8
        assert first.top_via.branch.startswith("z9hG4bK")
        assert first.headers.get("Content-Type") == "application/sdp"
        assert b"m=audio " in first.body
        assert raw.peer is not None
        raw.send(_reply(first, 100, "Trying"), raw.peer)
        await asyncio.sleep(4 * T1)
        while not raw.messages.empty():  # at most one crossed our 100
            crossed, _ = raw.messages.get_nowait()
            assert bytes(crossed) == bytes(first)
        raw.send(_reply(first, 486, "Busy Here"), raw.peer)
        ack, _ = await raw.next()
        assert isinstance(ack, SipRequest)
        assert ack.method == "ACK"
        assert ack.top_via.branch == first.top_via.branch  # same transaction
        assert ack.to.tag == "peer"
        assert ack.cseq.number == first.cseq.number
        with pytest.raises(CallFailed) as failed:
            await dial
        assert failed.value.status == 486
        raw.send(_reply(first, 486, "Busy Here"), raw.peer)  # our ACK was "lost"
        again, _ = await raw.next()
        assert bytes(again) == bytes(ack)
    finally:
        await ua.close()


def _invite_to(ua: UserAgent, port: int, branch: str = "z9hG4bKraw1") -> SipRequest:
    body = (
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 9 RTP/AVP 0\r\n"
    )
    invite = SipRequest(method="INVITE", uri=f"sip:2@127.0.0.1:{ua.port}", body=body)
    for name, value in (
        ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={branch}"),
        ("From", "<sip:1@127.0.0.1>;tag=rawtag"),
        ("To", "<sip:2@127.0.0.1>"),
        ("Call-ID", f"raw-{branch}"),
        ("CSeq", "1 INVITE"),
        ("Contact", f"<sip:1@127.0.0.1:{port}>"),
        ("Content-Type", "application/sdp"),
    ):
        invite.headers.add(name, value)
    return invite


async def test_200_is_retransmitted_until_the_ack(raw: RawPeer) -> None:
    ua = await UserAgent.start(t1=T1)
    ua.listen(_answering)
    try:
        invite = _invite_to(ua, raw.port)
        target = ("127.0.0.1", ua.port)
        raw.send(invite.serialize(), target)
        statuses = []
        times = []
        for _ in range(5):  # 100, 180, 200, then the 200 again twice
            message, when = await raw.next()
            assert isinstance(message, SipResponse)
            statuses.append(message.status)
            times.append(when)
        assert statuses == [100, 180, 200, 200, 200]
        assert times[4] - times[3] >= 2 * T1 * 0.8
        ok = message
        assert isinstance(ok, SipResponse)
        assert ok.to.tag
        # A retransmitted INVITE is answered with the last response, not a new call.
        raw.send(invite.serialize(), target)
        repeat, _ = await raw.next()
        assert isinstance(repeat, SipResponse)
        assert repeat.status == 200
        assert len(ua._calls) == 1
        ack = SipRequest(method="ACK", uri=f"sip:2@127.0.0.1:{ua.port}")
        for name in ("From", "Call-ID"):
            ack.headers.add(name, invite.headers.get(name) or "")
        ack.headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:{raw.port};branch=z9hG4bKrawack")
        ack.headers.add("To", ok.headers.get("To") or "")
        ack.headers.add("CSeq", "1 ACK")
        raw.send(ack.serialize(), target)
        await asyncio.sleep(6 * T1)
        while not raw.messages.empty():  # retransmissions that crossed the ACK, then none
            late, _ = raw.messages.get_nowait()
            assert isinstance(late, SipResponse)
            assert late.status == 200
        await asyncio.sleep(8 * T1)
        assert raw.messages.empty()
    finally:
        await ua.close()


async def test_options_and_garbage(raw: RawPeer) -> None:
    ua = await UserAgent.start(t1=T1)
    try:
        target = ("127.0.0.1", ua.port)
        raw.send(b"\r\n\r\n", target)  # keep-alive
        raw.send(b"GARBAGE \x00\xff", target)
        options = _invite_to(ua, raw.port, "z9hG4bKopt")
        options.method = "OPTIONS"
        options.headers.set("CSeq", "1 OPTIONS")
        raw.send(options.serialize(), target)
        reply, _ = await raw.next()
        assert isinstance(reply, SipResponse)
        assert reply.status == 200
        assert "INVITE" in (reply.headers.get("Allow") or "")
        bye = _invite_to(ua, raw.port, "z9hG4bKbye")
        bye.method = "BYE"
        bye.headers.set("CSeq", "2 BYE")
        bye.headers.set("To", "<sip:2@127.0.0.1>;tag=nosuchcall")
        raw.send(bye.serialize(), target)
        reply, _ = await raw.next()
        assert isinstance(reply, SipResponse)
        assert reply.status == 481
    finally:
        await ua.close()


@pytest.mark.parametrize("pace", [1.0, 10.0])
async def test_media_clock_and_audio_through_rtp(pace: float) -> None:
    caller = await UserAgent.start(pace=pace)
    callee = await UserAgent.start(pace=pace)
    answered: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def handler(incoming: IncomingCall) -> None:
        await incoming.answer()
        answered.put_nowait(incoming)

    callee.listen(handler)
    try:
        call = await caller.dial(callee.uri, "1", "2", codecs=(PCMU,))
        remote = (await asyncio.wait_for(answered.get(), 5)).call
        assert remote is not None
        t = np.arange(160 * 25) / 8000
        tone = (8000 * np.sin(2 * np.pi * 1100 * t)).astype(np.int16)
        blocks = tone.reshape(25, 160)
        started = time.monotonic()
        for block in blocks:
            await call.send_audio(block)
        elapsed = time.monotonic() - started
        assert 24 * 0.02 / pace * 0.9 <= elapsed < 25 * 0.02 / pace + 0.2
        heard = [await remote.recv_audio() for _ in range(25 + 10)]
        first = next(i for i, block in enumerate(heard) if block.any())  # after prefill
        received = np.concatenate(heard[first : first + 25])
        assert np.array_equal(received, g711_decode(g711_encode(tone, PCMU), PCMU))
        assert remote.rtp.jitter.lost == 0
        await call.hangup()
        # Once the call is over, recv_audio ends too (after anything still buffered).
        await asyncio.wait_for(remote.ended.wait(), 5)

        async def drain() -> None:
            for _ in range(100):
                await remote.recv_audio()

        with pytest.raises(CallEnded):
            await drain()
    finally:
        await caller.close()
        await callee.close()


async def test_a_retransmitted_200_is_acked_again(raw: RawPeer) -> None:
    ua = await UserAgent.start(t1=T1)
    try:
        dial = asyncio.create_task(ua.dial(f"sip:127.0.0.1:{raw.port}", "1", "2"))
        invite, _ = await raw.next()
        assert isinstance(invite, SipRequest)
        assert raw.peer is not None
        response = SipResponse(status=200, reason="OK", body=invite.body)
        for name, value in parse_message(_reply(invite, 200, "OK")).headers:
            if name != "Content-Length":
                response.headers.add(name, value)
        response.headers.add("Contact", f"<sip:2@127.0.0.1:{raw.port}>")
        response.headers.add("Content-Type", "application/sdp")
        raw.send(response.serialize(), raw.peer)
        call = await dial
        ack, _ = await raw.next()
        assert isinstance(ack, SipRequest)
        assert ack.method == "ACK"
        assert ack.top_via.branch != invite.top_via.branch  # 2xx ACK: a new transaction
        assert ack.uri == f"sip:2@127.0.0.1:{raw.port}"  # to the Contact
        raw.send(response.serialize(), raw.peer)  # our ACK was "lost"
        again, _ = await raw.next()
        assert bytes(again) == bytes(ack)
        assert call.rtp.remote is not None
    finally:
        await ua.close()
