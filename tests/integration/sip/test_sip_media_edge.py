"""Media from the peer the SDP named and nowhere else, over real UDP sockets: RTP and
UDPTL latch to the port the peer really sends from (symmetric RTP) and drop anything
from another address; the UDPTL receive queue stays bounded whatever arrives."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import numpy as np
import pytest

from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.rtp import RtpPacket, RtpStream, g711_encode
from faxbox.fax.sip.sdp import PCMU
from faxbox.fax.sip.transport import SocketClosed
from faxbox.fax.sip.ua import UserAgent
from faxbox.fax.sip.udptl import UdptlStream, encode_packets

pytestmark = pytest.mark.timeout(60)

TONE = (8000 * np.sin(np.arange(160) / 8000 * 2 * np.pi * 1100)).astype(np.int16)


def rtp_datagram(seq: int, ssrc: int = 7) -> bytes:
    return RtpPacket(PCMU, seq, seq * 160, ssrc, g711_encode(TONE, PCMU)).pack()


@pytest.fixture
def sockets() -> Iterator[dict[str, socket.socket]]:
    """UDP sockets of a peer: its announced port, its real port, and an intruder's."""
    made = {}
    for name, host in (("announced", "127.0.0.1"), ("real", "127.0.0.1"), ("other", "127.0.0.2")):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        sock.settimeout(2)
        made[name] = sock
    yield made
    for sock in made.values():
        sock.close()


async def settle() -> None:
    await asyncio.sleep(0.1)


async def test_rtp_latches_to_the_sdp_address_and_drops_everyone_else(
    sockets: dict[str, socket.socket],
) -> None:
    stream = await RtpStream.open("127.0.0.1", pace=0)
    try:
        ours = ("127.0.0.1", stream.local_port)
        # Before the SDP is known nothing is heard.
        sockets["real"].sendto(rtp_datagram(1), ours)
        await settle()
        assert stream.packets_received == 0
        # The SDP names the announced port; the peer sends from another (NAT): latched.
        stream.connect(sockets["announced"].getsockname(), PCMU)
        sockets["real"].sendto(rtp_datagram(2), ours)
        await settle()
        assert stream.packets_received == 1
        assert stream.remote == sockets["real"].getsockname()
        # Our audio goes back where theirs comes from, not to the announced port.
        await stream.send(TONE)
        data, _ = sockets["real"].recvfrom(2048)
        assert RtpPacket.parse(data).payload_type == PCMU
        # Another address, or another port of the same address: dropped, counted.
        sockets["other"].sendto(rtp_datagram(3), ours)
        sockets["announced"].sendto(rtp_datagram(4), ours)
        await settle()
        assert stream.packets_received == 1
        assert stream.latch.dropped == 3  # the one before the SDP, and these two
    finally:
        stream.close()


async def test_udptl_latches_and_its_queue_stays_bounded(
    sockets: dict[str, socket.socket],
) -> None:
    stream = UdptlStream(pace=0, max_queued=64)
    await stream.bind("127.0.0.1")
    try:
        ours = ("127.0.0.1", stream.local_port)
        stream.connect(sockets["announced"].getsockname())
        for datagram in encode_packets([(n, bytes([n % 256]) * 20) for n in range(20)]):
            sockets["other"].sendto(datagram, ours)
        await settle()
        assert stream.packets_received == 0
        assert stream.latch.dropped == 20
        # 2000 IFPs from the peer that nobody reads: the queue keeps the newest 64.
        datagrams = encode_packets([(n, n.to_bytes(2, "big")) for n in range(2000)])
        for start in range(0, len(datagrams), 50):
            for datagram in datagrams[start : start + 50]:
                sockets["real"].sendto(datagram, ours)
            await asyncio.sleep(0.005)  # the event loop reads them (the kernel's buffer is small)
        for _ in range(100):
            if stream.packets_received >= 2000:
                break
            await asyncio.sleep(0.02)
        assert stream.packets_received == 2000
        taken = stream.take_ifps()
        assert len(taken) == 64
        assert stream.overflowed == 2000 - 64
        assert taken[-1] == (1999, (1999).to_bytes(2, "big"))
        stream.send_ifp(b"\x01", 0)
        data, _ = sockets["real"].recvfrom(2048)
        assert data
    finally:
        stream.close()
    with pytest.raises(SocketClosed):
        await stream.recv_ifp()


async def test_udptl_learns_a_port_only_from_a_stream_at_its_start(
    sockets: dict[str, socket.socket],
) -> None:
    """The SDP's address sends nothing yet; a dead call's T.38, mid-way through its fax
    (the relay's address, another port), reaches the port a restart gave us again."""
    stream = UdptlStream(pace=0)
    await stream.bind("127.0.0.1")
    fresh = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fresh.bind(("127.0.0.1", 0))
    try:
        ours = ("127.0.0.1", stream.local_port)
        stream.connect(sockets["announced"].getsockname())
        for datagram in encode_packets([(n, b"old page") for n in range(700, 720)]):
            sockets["real"].sendto(datagram, ours)
        await settle()
        assert stream.packets_received == 0
        assert stream.remote == sockets["announced"].getsockname()
        assert stream.latch.dropped == 20
        # The peer's own stream, from its first datagram (from a port of its NAT): latched.
        for datagram in encode_packets([(n, b"DIS") for n in range(3)]):
            fresh.sendto(datagram, ours)
        await settle()
        assert stream.packets_received == 3
        assert stream.remote == fresh.getsockname()
        assert [ifp for _, ifp in stream.take_ifps()] == [b"DIS"] * 3
    finally:
        fresh.close()
        stream.close()


async def test_udptl_hears_its_announced_address_whatever_the_numbering(
    sockets: dict[str, socket.socket],
) -> None:
    stream = UdptlStream(pace=0)
    await stream.bind("127.0.0.1")
    try:
        stream.connect(sockets["announced"].getsockname())
        for datagram in encode_packets([(n, b"x") for n in range(5000, 5004)]):
            sockets["announced"].sendto(datagram, ("127.0.0.1", stream.local_port))
        await settle()
        assert stream.packets_received == 4
    finally:
        stream.close()


async def test_a_call_hears_only_its_peer() -> None:
    """Two user agents in a call; a third party sending to the callee's RTP port."""
    caller = await UserAgent.start(pace=10)
    callee = await UserAgent.start(pace=10)
    answered: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def handler(incoming: IncomingCall) -> None:
        await incoming.answer()
        answered.put_nowait(incoming)

    callee.listen(handler)
    intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    intruder.bind(("127.0.0.2", 0))
    try:
        call = await caller.dial(callee.uri, "1", "2", codecs=(PCMU,))
        remote = (await asyncio.wait_for(answered.get(), 5)).call
        assert remote is not None
        for _ in range(5):
            await call.send_audio(TONE)
        await asyncio.sleep(0.2)
        heard = remote.rtp.packets_received
        assert heard == 5
        target = ("127.0.0.1", remote.rtp.local_port)
        for seq in range(50):
            intruder.sendto(rtp_datagram(1000 + seq, ssrc=99), target)
        await asyncio.sleep(0.2)
        assert remote.rtp.packets_received == heard
        assert remote.rtp.latch.dropped == 50
        await call.hangup()
    finally:
        intruder.close()
        await caller.close()
        await callee.close()
