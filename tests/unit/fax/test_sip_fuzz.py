"""Fuzzing the parsers that read what the network sends: SIP, SDP, RTP, UDPTL, stream framing.

Arbitrary bytes and mutated valid messages (hypothesis). Each parser either returns a
value or raises its own parse error, never anything else (a stray IndexError or
UnicodeDecodeError would kill the handling of one message at best); what a decoder
keeps or returns is bounded whatever it is fed.
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faxbox.fax.sip.message import SipParseError, SipRequest, SipResponse, parse_message
from faxbox.fax.sip.reliable import RAck
from faxbox.fax.sip.rtp import JitterBuffer, RtpPacket, RtpParseError
from faxbox.fax.sip.sdp import SessionDescription, T38Params, sdp_of
from faxbox.fax.sip.session_timer import parse_session_expires
from faxbox.fax.sip.stream import MAX_HEADER_BYTES, FramingError, split_message
from faxbox.fax.sip.udptl import UdptlDecoder, UdptlPacket, UdptlParseError, encode_packets

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INVITE = (
    b"INVITE sip:+12125550100@127.0.0.1:5070;transport=tcp SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5080;branch=z9hG4bK776asdhds;rport\r\n"
    b"v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Faxbox" <sip:100@example.com>;tag=1928301774\r\n'
    b"To: <sip:+12125550100@example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:100@127.0.0.1:5080;transport=tcp>\r\n"
    b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Supported: timer, 100rel\r\nSession-Expires: 90;refresher=uac\r\nRAck: 1 314159 INVITE\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 142\r\n\r\n"
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8\r\nm=image 4002 udptl t38\r\na=T38FaxMaxDatagram:200\r\n"
)


def _read_everything(message: SipRequest | SipResponse) -> None:
    """Touch what the user agent reads from every message."""
    for read in (
        lambda: message.cseq,
        lambda: message.vias,
        lambda: message.from_,
        lambda: message.to,
        lambda: message.call_id,
        lambda: message.headers.tokens("Supported"),
        lambda: message.headers.get_all("Record-Route"),
    ):
        with contextlib.suppress(SipParseError):
            read()
    parse_session_expires(message.headers.get("Session-Expires"))
    RAck.parse(message.headers.get("RAck"))
    sdp_of(message)  # never raises: an unreadable body is no offer


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


@FUZZ
@given(st.one_of(st.binary(max_size=2048), mutated(INVITE)))
def test_sip_parser_raises_only_its_own_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError:
        return
    _read_everything(message)


@FUZZ
@given(st.one_of(st.binary(max_size=1024), mutated(INVITE.split(b"\r\n\r\n", 1)[1])))
def test_sdp_parser_raises_only_its_own_error(data: bytes) -> None:
    try:
        sdp = SessionDescription.parse(data)
    except (SipParseError, UnicodeDecodeError):
        return
    for media in sdp.media:
        T38Params.from_attributes(media.attributes)
        media.payload_types  # noqa: B018 (reads the formats)
    sdp.find("audio")
    sdp.find("t38")


@FUZZ
@given(st.binary(max_size=400))
def test_rtp_parser_and_jitter_buffer(data: bytes) -> None:
    buffer = JitterBuffer(prefill=1, max_packets=50)
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return
    for _ in range(3):
        buffer.push(packet)
    assert len(buffer) <= 50
    buffer.pop()


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=30))
def test_rtp_jitter_buffer_stays_bounded(datagrams: list[bytes]) -> None:
    buffer = JitterBuffer(prefill=3, max_packets=50)
    for n, payload in enumerate(datagrams * 5):
        buffer.push(RtpPacket(0, (n * 7919) & 0xFFFF, n * 160, 1234, payload))
        assert len(buffer) <= 50


VALID_UDPTL = encode_packets([(seq, bytes([seq % 256]) * 20) for seq in range(5)])


@FUZZ
@given(st.one_of(st.binary(max_size=600), st.sampled_from(VALID_UDPTL).flatmap(mutated)))
def test_udptl_parser_and_decoder(data: bytes) -> None:
    decoder = UdptlDecoder(window=64)
    try:
        UdptlPacket.parse(data)
        out = decoder.decode(data)
    except UdptlParseError:
        return
    assert len(out) <= 65  # the primary and at most a window of recovered IFPs


@FUZZ
@given(st.lists(st.integers(0, 0xFFFF), max_size=50))
def test_udptl_decoder_output_is_bounded_by_its_window(seqs: list[int]) -> None:
    decoder = UdptlDecoder(window=64)
    for seq in seqs:
        [packet] = encode_packets([(seq, b"\x00\x01")])
        assert len(decoder.decode(packet)) <= 65


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=300), mutated(INVITE)), max_size=6))
def test_stream_framing_raises_only_its_own_error_and_stays_bounded(chunks: list[bytes]) -> None:
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        try:
            while (message := split_message(buffer)) is not None:
                assert message == b"\r\n\r\n" or b"\r\n\r\n" in message
        except FramingError:
            return
        assert len(buffer) <= MAX_HEADER_BYTES + 2048


def test_stream_framing_refuses_an_endless_header() -> None:
    buffer = bytearray(b"INVITE sip:x SIP/2.0\r\n" + b"X: " + b"a" * (MAX_HEADER_BYTES + 10))
    try:
        split_message(buffer)
    except FramingError:
        return
    raise AssertionError("an endless header section must be refused")
