"""G.711 audio over RTP (RFC 3550/3551): codecs, packets, a jitter buffer, a UDP stream.

The codecs are lookup tables built once with numpy (``audioop`` is deprecated and gone
in Python 3.13): 65536 entries for encoding (indexed by the sample's 16-bit pattern),
256 for decoding. They follow the classic Sun/CCITT reference code bit for bit.

Time: a stream sends and plays 20 ms packets of 160 samples. ``pace`` sets the clock:
1.0 is real time (production); N plays 20 ms of audio every 20/N ms (tests); 0 means
unpaced lock-step: ``recv`` returns as soon as the peer's next packet is there, which
only works when the peer also sends one packet per packet received (two fax engines).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter

from faxbox.fax.sip.latch import SourceLatch
from faxbox.fax.sip.ports import PortRange
from faxbox.fax.sip.sdp import PCMA, PCMU
from faxbox.fax.sip.transport import DatagramEndpoint, SocketClosed

log = logging.getLogger("faxbox.fax.sip.rtp")

SAMPLES_PER_PACKET = 160
PACKET_SECONDS = 0.020
Samples = npt.NDArray[np.int16]


# --- G.711 ------------------------------------------------------------------------------


def _build_ulaw() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int16]]:
    # Encode: 16-bit linear → 14 bit, bias 33, segment = position of the top bit.
    linear = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(linear < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(linear), 8159) + 0x21
    seg_end = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = np.searchsorted(seg_end, magnitude, side="left")
    code = (seg << 4) | ((magnitude >> (seg + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code) ^ mask
    encode = np.empty(65536, dtype=np.uint8)
    # Index by the unsigned 16-bit pattern of each sample.
    encode[np.arange(-32768, 32768, dtype=np.int32) & 0xFFFF] = code.astype(np.uint8)
    # Decode.
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    decode = np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)
    return encode, decode


def _build_alaw() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int16]]:
    linear = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(linear >= 0, 0xD5, 0x55)
    magnitude = np.where(linear >= 0, linear, -linear - 1)
    seg_end = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    seg = np.searchsorted(seg_end, magnitude, side="left")
    shift = np.where(seg < 2, 1, seg)
    code = (seg << 4) | ((magnitude >> shift) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    code = code ^ mask
    encode = np.empty(65536, dtype=np.uint8)
    encode[np.arange(-32768, 32768, dtype=np.int32) & 0xFFFF] = code.astype(np.uint8)
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg_d = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg_d == 0, t + 8, t + 0x108)
    t = np.where(seg_d > 1, t << np.maximum(seg_d - 1, 0), t)
    decode = np.where(a & 0x80, t, -t).astype(np.int16)
    return encode, decode


ULAW_ENCODE, ULAW_DECODE = _build_ulaw()
ALAW_ENCODE, ALAW_DECODE = _build_alaw()
_ENCODERS = {PCMU: ULAW_ENCODE, PCMA: ALAW_ENCODE}
_DECODERS = {PCMU: ULAW_DECODE, PCMA: ALAW_DECODE}


def g711_encode(samples: npt.NDArray[np.int16], payload_type: int) -> bytes:
    """Linear 16-bit samples → one byte per sample (PCMU=0 or PCMA=8)."""
    table = _ENCODERS[payload_type]
    pattern = np.ascontiguousarray(samples, dtype=np.int16).view(np.uint16)
    return table[pattern].tobytes()


def g711_decode(data: bytes, payload_type: int) -> Samples:
    table = _DECODERS[payload_type]
    return table[np.frombuffer(data, dtype=np.uint8)]


def silence(n: int = SAMPLES_PER_PACKET) -> Samples:
    return np.zeros(n, dtype=np.int16)


# --- Packets ----------------------------------------------------------------------------

_HEADER = struct.Struct("!BBHII")


class RtpParseError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def pack(self) -> bytes:
        return (
            _HEADER.pack(
                0x80,
                (0x80 if self.marker else 0) | (self.payload_type & 0x7F),
                self.seq & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc,
            )
            + self.payload
        )

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < _HEADER.size:
            raise RtpParseError("shorter than an RTP header")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != 2:
            raise RtpParseError("not RTP version 2")
        offset = _HEADER.size + 4 * (b0 & 0x0F)  # CSRCs
        if b0 & 0x10:  # header extension
            if len(data) < offset + 4:
                raise RtpParseError("truncated header extension")
            (words,) = struct.unpack_from("!H", data, offset + 2)
            offset += 4 + 4 * words
        end = len(data)
        if b0 & 0x20:  # padding
            if end == 0 or data[-1] > end - offset:
                raise RtpParseError("bad padding")
            end -= data[-1]
        if offset > end:
            raise RtpParseError("truncated packet")
        return cls(b1 & 0x7F, seq, ts, ssrc, bytes(data[offset:end]), bool(b1 & 0x80))


def _newer(a: int, b: int) -> bool:
    """16-bit sequence number ``a`` comes after ``b`` (RFC 1982 style)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


class JitterBuffer:
    """Re-orders packets by sequence number and hides late or lost ones.

    ``pop`` is called once per 20 ms slot. It waits for ``prefill`` packets before the
    first one is played. Then: the next packet if it is there; if it is missing but newer
    ones arrived, it is lost: its slot is skipped (None); if nothing is there at all the
    sender is late: None without advancing, so a late packet is played late, not dropped.
    More than ``max_packets`` waiting means our clock is slower: the oldest are dropped.
    A new SSRC, or a jump in sequence numbers further than ``max_packets``, is a new
    stream (the far end restarted it): the buffer starts again from there.
    """

    def __init__(self, prefill: int = 3, max_packets: int = 50) -> None:
        self.prefill = max(1, prefill)
        self.max_packets = max(self.prefill + 1, max_packets)
        self._packets: dict[int, RtpPacket] = {}
        self._next: int | None = None
        self._ssrc: int | None = None
        self.lost = 0
        self.late = 0
        self.underruns = 0

    def __len__(self) -> int:
        return len(self._packets)

    def push(self, packet: RtpPacket) -> None:
        if packet.ssrc != self._ssrc:
            self._restart(packet.ssrc)
        elif self._next is not None:
            distance = (packet.seq - self._next) & 0xFFFF
            if distance >= 0x8000:  # before the next one to play
                if 0x10000 - distance <= self.max_packets:
                    self.late += 1
                    return
                self._restart(packet.ssrc)
            elif distance > self.max_packets:
                self._restart(packet.ssrc)
        self._packets[packet.seq] = packet
        while len(self._packets) > self.max_packets:
            oldest = self._oldest()
            del self._packets[oldest]
            self.lost += 1
            if self._next is not None and not _newer(self._next, oldest):
                self._next = (oldest + 1) & 0xFFFF

    def _restart(self, ssrc: int) -> None:
        self.lost += len(self._packets)
        self._packets.clear()
        self._ssrc = ssrc
        if self._next is not None:
            self._next = None
            self.prefill = 1  # already playing: no new prefill delay

    def _oldest(self) -> int:
        seqs = iter(self._packets)
        oldest = next(seqs)
        for seq in seqs:
            if _newer(oldest, seq):
                oldest = seq
        return oldest

    def pop(self) -> RtpPacket | None:
        if self._next is None:
            if len(self._packets) < self.prefill:
                return None
            self._next = self._oldest()
        packet = self._packets.pop(self._next, None)
        if packet is not None or self._packets:
            if packet is None:
                self.lost += 1
            self._next = (self._next + 1) & 0xFFFF
            return packet
        self.underruns += 1
        return None

    def drain(self) -> RtpPacket | None:
        """The oldest packet left, ignoring prefill and gaps (the stream has ended)."""
        if not self._packets:
            return None
        seq = self._next if self._next is not None and self._next in self._packets else None
        seq = self._oldest() if seq is None else seq
        self._next = (seq + 1) & 0xFFFF
        return self._packets.pop(seq)


# --- The stream -------------------------------------------------------------------------


class MediaClosed(SocketClosed):
    """The media stream was closed (the call ended)."""


# The most real time a late clock makes up for by sending back to back. An event loop
# stalled longer (a busy machine) drops the rest, as a late packet would be dropped,
# instead of bursting seconds of media at the far end or spinning to catch up.
MAX_CATCH_UP_S = 0.2

MEDIA_LAG_DROPPED_MS = Counter(
    "faxbox_media_lag_dropped_ms",
    "Milliseconds of media time a late media clock did not make up for (a stalled event "
    "loop): above zero, the machine is too busy for the calls it carries",
)


class Clock:
    """Slots of 20 ms of media time every 20/pace ms of real time (pace 0: no waiting)."""

    def __init__(self, pace: float, now: Callable[[], float] | None = None) -> None:
        if pace < 0:
            raise ValueError("pace must be >= 0")
        self.pace = pace
        self.interval = PACKET_SECONDS / pace if pace else 0.0
        self._start: float | None = None
        self._now = now
        self.slots = 0
        self.dropped_media_s = 0.0

    async def wait_slot(self, slots: int = 1) -> None:
        """Wait for the next slot's time (when late, only a yield; unpaced, not at all); it
        lasts ``slots`` slots."""
        if self.pace:
            now = self._now() if self._now else asyncio.get_running_loop().time()
            if self._start is None:
                self._start = now
            due = self._start + self.slots * self.interval
            if now - due > MAX_CATCH_UP_S:
                dropped = now - due - MAX_CATCH_UP_S
                self._start += dropped
                due += dropped
                self.dropped_media_s += dropped * self.pace
                MEDIA_LAG_DROPPED_MS.inc(dropped * self.pace * 1000)
            # Late, it still yields: a pump that never waits would starve the loop (the
            # other calls, the far end's BYE) and, while it never catches up, run forever.
            await asyncio.sleep(max(0.0, due - now))
        self.slots += slots


def default_prefill(pace: float, prefill: int | None = None) -> int:
    """Packets the jitter buffer holds before playing: 160 ms of call time and, on a
    faster clock, at least 20 ms of real time (event-loop stalls are real time). 1 when
    unpaced (lock-step needs no buffer).

    160 ms, as fax pass-through gateways keep a fixed buffer of 100-200 ms: a modem's
    carrier does not survive a gap, and a buffer run dry plays one. The sender's and
    the receiver's scheduling delays add up; with 60 ms, a receiver of 100 concurrent
    G.711 calls fed by a transmitter 20-36 ms late at times lost 15 and 90 of 300
    calls (benchmarks/overload.py), with 160 ms none. T.30's timers count seconds."""
    if not pace:
        return 1
    if prefill is not None:
        return max(1, prefill)
    return max(8, math.ceil(pace))


class RtpStream(DatagramEndpoint):
    """One call's G.711 RTP: ``send`` a block of 160 samples, ``recv`` one per 20 ms slot."""

    def __init__(
        self, pace: float = 1.0, jitter_prefill: int | None = None, unpaced_wait: float = 0.25
    ) -> None:
        self.pace = pace
        self.payload_type = PCMU
        self.latch = SourceLatch()
        self.ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)
        self._first = True
        self._jitter = JitterBuffer(prefill=default_prefill(pace, jitter_prefill))
        self._send_clock = Clock(pace)
        self._recv_clock = Clock(pace)
        self._arrived = asyncio.Event()
        self._closed = False
        self._unpaced_wait = unpaced_wait
        self.packets_sent = 0
        self.packets_received = 0

    @classmethod
    async def open(
        cls,
        host: str,
        port: int = 0,
        *,
        pace: float = 1.0,
        jitter_prefill: int | None = None,
        ports: PortRange | None = None,
    ) -> RtpStream:
        """A stream bound to ``port``, or to an even port of ``ports`` when given."""
        stream = cls(pace, jitter_prefill)
        if ports is not None and not port:
            await stream.bind_in(host, ports, even=True)
        else:
            await stream.bind(host, port)
        return stream

    @property
    def jitter(self) -> JitterBuffer:
        return self._jitter

    @property
    def remote(self) -> tuple[str, int] | None:
        """Where our audio goes: the peer's latched address (see ``latch``)."""
        return self.latch.destination

    def connect(self, remote: tuple[str, int], payload_type: int) -> None:
        if payload_type not in _ENCODERS:
            raise ValueError(f"unsupported payload type {payload_type}")
        self.latch.expect(remote)
        self.payload_type = payload_type

    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.latch.admit(addr):
            return  # not the peer the SDP named
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError:
            return
        if packet.payload_type not in _DECODERS:
            return  # comfort noise, telephone-event...: not for a fax modem
        self.packets_received += 1
        self._jitter.push(packet)
        self._arrived.set()

    async def send(self, samples: npt.NDArray[np.int16]) -> None:
        if self._closed or self._transport is None:
            raise MediaClosed("RTP stream closed")
        await self._send_clock.wait_slot()
        if self.remote is None or self._closed:
            return
        data = g711_encode(samples, self.payload_type)
        packet = RtpPacket(
            self.payload_type, self._seq, self._timestamp, self.ssrc, data, marker=self._first
        )
        self._first = False
        self._seq = (self._seq + 1) & 0xFFFF
        self._timestamp = (self._timestamp + len(samples)) & 0xFFFFFFFF
        self.sendto(packet.pack(), self.remote)
        self.packets_sent += 1

    async def recv(self) -> Samples:
        """The next 20 ms of received audio; silence where packets are missing.

        Once closed, what is still buffered is returned (no waiting), then MediaClosed.
        """
        if self._closed:
            left = self._jitter.drain()
            if left is None:
                raise MediaClosed("RTP stream closed")
            return g711_decode(left.payload, left.payload_type)
        if self.pace:
            await self._recv_clock.wait_slot()
        elif not len(self._jitter):
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), self._unpaced_wait)
        if self._closed:
            return await self.recv()
        packet = self._jitter.pop()
        if packet is None:
            return silence()
        return g711_decode(packet.payload, packet.payload_type)

    def close(self) -> None:
        self._closed = True
        self._arrived.set()
        self.close_socket()

    @property
    def closed(self) -> bool:
        return self._closed
