"""UDPTL (ITU-T T.38 clause 9.1 / Annex, ASN.1 PER aligned): IFP packets with redundancy.

A UDPTL packet is::

    seq-number        16 bits
    primary-ifp       open type: length determinant + IFP bytes
    error-recovery    1 choice bit (0 redundancy, 1 FEC) padded to a byte, then for
                      redundancy: count (length determinant) and that many open types,
                      the IFPs of seq-1, seq-2, ... (most recent first)

Every IFP is sent once as primary and again as secondary in the next ``redundancy``
packets, so the receiver can recover a lost packet from a later one. FEC packets are
recognised and only their primary is used.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from faxbox.fax.sip.latch import SourceLatch
from faxbox.fax.sip.ports import PortRange
from faxbox.fax.sip.rtp import MediaClosed
from faxbox.fax.sip.transport import DatagramEndpoint

log = logging.getLogger("faxbox.fax.sip.udptl")


# IFPs received and not yet read: seconds of T.38 at any pace the fax line runs.
DEFAULT_MAX_QUEUED = 1024
# A datagram numbered past this cannot be among a stream's first (ours numbers from 0):
# from a port the SDP did not announce, it is not latched (``faxbox.fax.sip.latch``).
FRESH_SEQ = 128


class UdptlParseError(ValueError):
    pass


def _encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n < 0x4000:
        return bytes([0x80 | (n >> 8), n & 0xFF])
    raise ValueError("UDPTL field longer than 16383 bytes (fragmentation not supported)")


def _decode_length(data: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(data):
        raise UdptlParseError("truncated length")
    first = data[offset]
    if first & 0x80 == 0:
        return first, offset + 1
    if first & 0x40 == 0:
        if offset + 1 >= len(data):
            raise UdptlParseError("truncated length")
        return ((first & 0x3F) << 8) | data[offset + 1], offset + 2
    raise UdptlParseError("fragmented length not supported")


def _open_type(data: bytes, offset: int) -> tuple[bytes, int]:
    length, offset = _decode_length(data, offset)
    if offset + length > len(data):
        raise UdptlParseError("truncated open type")
    return bytes(data[offset : offset + length]), offset + length


@dataclass(frozen=True, slots=True)
class UdptlPacket:
    seq: int
    primary: bytes
    secondary: tuple[bytes, ...] = ()  # IFPs of seq-1, seq-2, ...
    fec: bool = False

    def pack(self) -> bytes:
        if self.fec:
            raise ValueError("FEC encoding is not supported")
        out = bytearray(((self.seq >> 8) & 0xFF, self.seq & 0xFF))
        out += _encode_length(len(self.primary)) + self.primary
        out.append(0x00)  # error-recovery: secondary-ifp-packets
        out += _encode_length(len(self.secondary))
        for ifp in self.secondary:
            out += _encode_length(len(ifp)) + ifp
        return bytes(out)

    @classmethod
    def parse(cls, data: bytes) -> UdptlPacket:
        if len(data) < 4:
            raise UdptlParseError("shorter than a UDPTL packet")
        seq = (data[0] << 8) | data[1]
        primary, offset = _open_type(data, 2)
        if offset >= len(data):
            raise UdptlParseError("no error-recovery field")
        if data[offset] & 0x80:  # fec-info: we use the primary only
            return cls(seq, primary, (), fec=True)
        offset += 1
        count, offset = _decode_length(data, offset)
        secondary: list[bytes] = []
        for _ in range(count):
            ifp, offset = _open_type(data, offset)
            secondary.append(ifp)
        return cls(seq, primary, tuple(secondary))


class UdptlEncoder:
    """Builds outgoing packets with up to ``redundancy`` previous IFPs, within max_datagram."""

    def __init__(self, redundancy: int = 3, max_datagram: int = 400) -> None:
        self.redundancy = redundancy
        self.max_datagram = max_datagram
        self._history: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=16)

    def encode(self, seq: int, ifp: bytes) -> bytes:
        """The packet for a new IFP; encode the same (seq, ifp) again for extra copies."""
        if self._history and self._history[-1][0] == seq:
            self._history.pop()  # a repeated copy: same secondaries as the first
        previous = [
            data for s, data in reversed(self._history) if ((seq - s) & 0xFFFF) <= self.redundancy
        ]
        self._history.append((seq, ifp))
        while True:
            packet = UdptlPacket(seq, ifp, tuple(previous)).pack()
            if len(packet) <= self.max_datagram or not previous:
                return packet
            previous.pop()


class UdptlDecoder:
    """Drops duplicates, restores order and recovers lost IFPs from the secondaries."""

    def __init__(self, window: int = 64) -> None:
        self.window = window  # sequence jumps further than this restart the stream
        self._expected: int | None = None
        self.recovered = 0
        self.lost = 0
        self.duplicates = 0

    def decode(self, data: bytes) -> list[tuple[int, bytes]]:
        packet = UdptlPacket.parse(data)
        if self._expected is None:
            self._expected = packet.seq
        gap = (packet.seq - self._expected) & 0xFFFF
        if gap >= 0x8000 and 0x10000 - gap <= self.window:
            self.duplicates += 1  # older than expected: a copy or a late packet
            return []
        if gap >= 0x8000 or gap > self.window:  # a restarted stream: follow it
            self.lost += 0 if gap >= 0x8000 else gap
            gap = 0
        out: list[tuple[int, bytes]] = []
        for missing in range(gap, 0, -1):  # oldest missing first
            seq = (packet.seq - missing) & 0xFFFF
            index = missing - 1
            if index < len(packet.secondary):
                out.append((seq, packet.secondary[index]))
                self.recovered += 1
            else:
                self.lost += 1
        out.append((packet.seq, packet.primary))
        self._expected = (packet.seq + 1) & 0xFFFF
        return out


def _begins_a_stream(data: bytes) -> bool:
    """Whether a datagram can be among a UDPTL stream's first: numbered below
    ``FRESH_SEQ``. A peer numbering from elsewhere is still heard at its announced port."""
    return len(data) >= 2 and ((data[0] << 8) | data[1]) < FRESH_SEQ


class UdptlStream(DatagramEndpoint):
    """One call's T.38 transport: ``send_ifp`` out, ``recv_ifp`` in (in order, once each)."""

    def __init__(
        self,
        pace: float = 1.0,
        redundancy: int = 3,
        max_datagram: int = 400,
        max_queued: int = DEFAULT_MAX_QUEUED,
    ) -> None:
        self.pace = pace
        self.latch = SourceLatch()
        self.encoder = UdptlEncoder(redundancy, max_datagram)
        self.decoder = UdptlDecoder()
        # Bounded: a peer (or anyone) sending faster than the fax reads cannot grow it
        # without end; past the bound the oldest IFPs go (T.30 recovers or fails).
        self._queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(max_queued)
        self.overflowed = 0
        self._closed = False
        self.packets_sent = 0
        self.packets_received = 0

    @classmethod
    async def open(
        cls, host: str, port: int = 0, *, pace: float = 1.0, ports: PortRange | None = None
    ) -> UdptlStream:
        stream = cls(pace)
        if ports is not None and not port:
            await stream.bind_in(host, ports)
        else:
            await stream.bind(host, port)
        return stream

    @property
    def remote(self) -> tuple[str, int] | None:
        """Where our IFPs go: the peer's latched address (see ``latch``)."""
        return self.latch.destination

    def connect(
        self,
        remote: tuple[str, int],
        max_datagram: int | None = None,
        redundancy: int | None = None,
    ) -> None:
        """Send to ``remote`` (latched, see ``latch``), in datagrams of at most the far
        end's ``T38FaxMaxDatagram``, with ``redundancy`` earlier IFPs in each (0 for
        ``t38UDPNoEC``)."""
        self.latch.expect(remote)
        if max_datagram:
            self.encoder.max_datagram = max_datagram
        if redundancy is not None:
            self.encoder.redundancy = redundancy

    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.latch.admit(addr, fresh=_begins_a_stream(data)):
            return  # not the peer the SDP named
        try:
            ifps = self.decoder.decode(data)
        except UdptlParseError:
            return
        self.packets_received += 1
        for item in ifps:
            self._put(item)

    def _put(self, item: tuple[int, bytes]) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.overflowed += 1
        self._queue.put_nowait(item)

    def send_ifp(self, ifp: bytes, seq: int, copies: int = 1) -> None:
        if self._closed or self._transport is None:
            raise MediaClosed("UDPTL stream closed")
        if self.remote is None:
            return
        for _ in range(max(1, copies)):
            self.sendto(self.encoder.encode(seq, ifp), self.remote)
            self.packets_sent += 1

    async def recv_ifp(self) -> tuple[int, bytes]:
        if self._closed and self._queue.empty():
            raise MediaClosed("UDPTL stream closed")
        item = await self._queue.get()
        if item[0] < 0:
            raise MediaClosed("UDPTL stream closed")
        return item

    def take_ifps(self) -> list[tuple[int, bytes]]:
        """Everything received so far, without waiting."""
        out: list[tuple[int, bytes]] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item[0] >= 0:
                out.append(item)
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._put((-1, b""))  # wakes a waiting recv_ifp
            self.close_socket()

    @property
    def closed(self) -> bool:
        return self._closed


def encode_packets(seq_ifps: Sequence[tuple[int, bytes]], redundancy: int = 3) -> list[bytes]:
    """Helper for tests and tools: the datagrams for a run of IFPs."""
    encoder = UdptlEncoder(redundancy)
    return [encoder.encode(seq, ifp) for seq, ifp in seq_ifps]
