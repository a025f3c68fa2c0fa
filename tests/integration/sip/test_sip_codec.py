"""The SIP stack's pure parts: messages, digest, SDP, G.711, RTP, jitter buffer, UDPTL.

Reference values come from outside this code where they exist: the RFC 2617 digest
example, Python's own (deprecated) ``audioop`` G.711 for every sample value.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from faxbox.fax.sip.digest import Credentials, digest_authorization, parse_auth_params
from faxbox.fax.sip.message import (
    CSeq,
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    Via,
    parse_message,
)
from faxbox.fax.sip.rtp import JitterBuffer, RtpPacket, RtpParseError, g711_decode, g711_encode
from faxbox.fax.sip.sdp import (
    PCMA,
    PCMU,
    SessionDescription,
    T38Params,
    answer_t38,
    audio_media,
    choose_codec,
    t38_media,
)
from faxbox.fax.sip.udptl import UdptlDecoder, UdptlEncoder, UdptlPacket, UdptlParseError

INVITE = (
    b"INVITE sip:200@127.0.0.1:5070 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKproxy, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKa\r\n"
    b"Via: SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bKb;received=192.0.2.1\r\n"
    b'f: "Alice, Fax" <sip:100@10.0.0.2>;tag=abc\r\n'
    b"t: <sip:200@127.0.0.1:5070>\r\n"
    b"i: 1234@10.0.0.2\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"m: <sip:100@10.0.0.2:5060>\r\n"
    b"Subject: a folded\r\n"
    b"  header\r\n"
    b"c: application/sdp\r\n"
    b"l: 4\r\n"
    b"\r\n"
    b"v=0\r\nextra bytes after the body"
)


def test_request_with_compact_headers_and_several_vias() -> None:
    message = parse_message(INVITE)
    assert isinstance(message, SipRequest)
    assert (message.method, message.uri) == ("INVITE", "sip:200@127.0.0.1:5070")
    vias = message.vias
    assert [v.branch for v in vias] == ["z9hG4bKproxy", "z9hG4bKa", "z9hG4bKb"]
    assert (vias[0].host, vias[0].port, vias[0].transport) == ("10.0.0.1", 5060, "UDP")
    assert (vias[1].host, vias[1].port) == ("10.0.0.2", None)
    assert (vias[2].host, vias[2].port) == ("2001:db8::1", 5062)
    assert vias[2].params["received"] == "192.0.2.1"
    assert message.from_.display == "Alice, Fax"
    assert message.from_.tag == "abc"
    assert message.to.tag is None
    assert message.call_id == "1234@10.0.0.2"
    assert message.cseq == CSeq(7, "INVITE")
    assert message.headers.get("subject") == "a folded header"
    assert message.content_type == "application/sdp"
    assert message.body == b"v=0\r"  # cut to Content-Length
    # Serialised with long names, one Content-Length, and parsed back the same.
    data = message.serialize()
    assert b"\r\nVia: SIP/2.0/UDP 10.0.0.1" in data
    assert data.count(b"Content-Length") == 1
    again = parse_message(data)
    assert isinstance(again, SipRequest)
    assert [v.branch for v in again.vias] == [v.branch for v in vias]
    assert again.body == message.body
    assert str(again.from_) == '"Alice, Fax" <sip:100@10.0.0.2>;tag=abc'


def test_response_round_trip() -> None:
    response = SipResponse(status=486, reason="Busy Here", body=b"")
    for name, value in (
        ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;rport"),
        ("From", "<sip:1@a>;tag=1"),
        ("To", "<sip:2@b>;tag=2"),
        ("Call-ID", "c"),
        ("CSeq", "1 INVITE"),
    ):
        response.headers.add(name, value)
    parsed = parse_message(response.serialize())
    assert isinstance(parsed, SipResponse)
    assert (parsed.status, parsed.reason) == (486, "Busy Here")
    assert parsed.top_via.params == {"branch": "z9hG4bKx", "rport": None}
    assert str(parsed.top_via) == "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;rport"
    assert parsed.headers.get("Content-Length") == "0"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"HELLO\r\n\r\n",
        b"SIP/2.0 abc OK\r\nVia: SIP/2.0/UDP a\r\n\r\n",
        INVITE.replace(b"CSeq: 7 INVITE", b"CSeq: seven INVITE"),
        INVITE.replace(b"i: 1234@10.0.0.2\r\n", b""),
        INVITE.replace(b"l: 4", b"l: 400"),
        INVITE.replace(b"m: <sip", b"m <sip"),
    ],
    ids=["empty", "not-sip", "bad-status", "bad-cseq", "no-call-id", "short-body", "no-colon"],
)
def test_bad_messages_are_refused(data: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(data).cseq  # noqa: B018 (the CSeq is only parsed when read)


def test_uris_and_name_addresses() -> None:
    uri = SipUri.parse("sip:+4930123@gw.example:5080;user=phone")
    assert (uri.user, uri.host, uri.port, uri.params) == (
        "+4930123",
        "gw.example",
        5080,
        {"user": "phone"},
    )
    assert str(uri) == "sip:+4930123@gw.example:5080;user=phone"
    bare = NameAddr.parse("sip:100@host;tag=xyz")
    assert (bare.uri, bare.tag) == ("sip:100@host", "xyz")
    with pytest.raises(SipParseError):
        SipUri.parse("tel:+123")
    with pytest.raises(SipParseError):
        Via.parse("HTTP/1.1 host")


def test_digest_matches_the_rfc_2617_example() -> None:
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    value = digest_authorization(
        challenge,
        Credentials("Mufasa", "Circle Of Life"),
        "GET",
        "/dir/index.html",
        cnonce="0a4f113b",
    )
    scheme, params = parse_auth_params(value)
    assert scheme == "Digest"
    assert params["response"] == "6629fae49393a05397450978507c4ef1"
    assert params["nc"] == "00000001"
    assert params["qop"] == "auth"
    assert params["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"


def test_digest_without_qop_and_unsupported_schemes() -> None:
    # RFC 2069 form: response = MD5(HA1:nonce:HA2), computed here independently.
    import hashlib

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    value = digest_authorization(
        'Digest realm="r", nonce="n"', Credentials("u", "p"), "INVITE", "sip:2@h"
    )
    expected = md5(f"{md5('u:r:p')}:n:{md5('INVITE:sip:2@h')}")
    assert parse_auth_params(value)[1]["response"] == expected
    assert "qop" not in parse_auth_params(value)[1]
    with pytest.raises(ValueError, match="scheme"):
        digest_authorization('Basic realm="r"', Credentials("u", "p"), "INVITE", "sip:x@y")
    with pytest.raises(ValueError, match="algorithm"):
        digest_authorization(
            'Digest realm="r", nonce="n", algorithm=SHA-512-256',
            Credentials("u", "p"),
            "INVITE",
            "sip:x@y",
        )


GATEWAY_T38_SDP = b"""v=0\r
o=- 1 2 IN IP4 192.0.2.10\r
s=-\r
c=IN IP4 192.0.2.10\r
t=0 0\r
m=audio 0 RTP/AVP 0\r
m=image 40000 udptl t38\r
c=IN IP4 192.0.2.11\r
a=T38FaxVersion:0\r
a=T38MaxBitRate:9600\r
a=T38FaxFillBitRemoval\r
a=T38FaxRateManagement:transferredTCF\r
a=T38FaxMaxBuffer:200\r
a=T38FaxMaxDatagram:72\r
a=T38FaxUdpEC:t38UDPRedundancy\r
"""


def test_sdp_t38_offer_from_a_gateway() -> None:
    sdp = SessionDescription.parse(GATEWAY_T38_SDP)
    assert sdp.find("audio") is None  # port 0: declined
    media = sdp.find("t38")
    assert media is not None
    assert sdp.endpoint(media) == ("192.0.2.11", 40000)
    params = T38Params.from_attributes(media.attributes)
    assert params == T38Params(
        version=0,
        max_bit_rate=9600,
        rate_management="transferredTCF",
        max_buffer=200,
        max_datagram=72,
        udp_ec="t38UDPRedundancy",
        fill_bit_removal=True,
    )
    answer = answer_t38(params)
    assert (answer.max_bit_rate, answer.rate_management, answer.udp_ec) == (
        9600,
        "transferredTCF",
        "t38UDPRedundancy",
    )


def test_sdp_offer_answer_round_trip() -> None:
    offer = SessionDescription(
        "127.0.0.1", [audio_media(4000, [PCMA, PCMU]), t38_media(4002)], session_id=9
    )
    text = offer.serialize().decode()
    assert "m=audio 4000 RTP/AVP 8 0\r\n" in text
    assert "a=rtpmap:8 PCMA/8000\r\n" in text
    assert "m=image 4002 udptl t38\r\n" in text
    assert "a=T38FaxRateManagement:transferredTCF\r\n" in text
    assert "a=T38FaxUdpEC:t38UDPRedundancy\r\n" in text
    assert "a=T38FaxMaxDatagram:400\r\n" in text
    parsed = SessionDescription.parse(text)
    audio = parsed.find("audio")
    assert audio is not None
    assert audio.payload_types == [PCMA, PCMU]
    assert choose_codec(audio) == PCMA  # the offerer's preference
    assert choose_codec(audio, [PCMU]) == PCMU
    assert choose_codec(audio, [18]) is None
    t38 = parsed.find("t38")
    assert t38 is not None
    assert T38Params.from_attributes(t38.attributes) == T38Params()
    with pytest.raises(SipParseError):
        SessionDescription.parse("v=0\r\nm=audio 1 RTP/AVP 0\r\n")  # no c= line


@pytest.mark.parametrize("payload_type", [PCMU, PCMA], ids=["ulaw", "alaw"])
def test_g711_matches_audioop_for_every_value(payload_type: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:  # Python 3.13+
            pytest.skip("audioop is gone from this Python")
    samples = np.arange(-32768, 32768, dtype=np.int16)
    every_code = bytes(range(256))
    if payload_type == PCMU:
        encoded, decoded = audioop.lin2ulaw(samples.tobytes(), 2), audioop.ulaw2lin(every_code, 2)
    else:
        encoded, decoded = audioop.lin2alaw(samples.tobytes(), 2), audioop.alaw2lin(every_code, 2)
    assert g711_encode(samples, payload_type) == encoded
    assert np.array_equal(g711_decode(every_code, payload_type), np.frombuffer(decoded, np.int16))


def test_g711_round_trip_is_close() -> None:
    rng = np.random.default_rng(1)
    samples = rng.integers(-30000, 30000, 1600).astype(np.int16)
    for pt in (PCMU, PCMA):
        back = g711_decode(g711_encode(samples, pt), pt).astype(np.int32)
        error = np.abs(back - samples.astype(np.int32))
        assert (error <= np.abs(samples.astype(np.int32)) // 16 + 16).all()


def test_rtp_packets() -> None:
    packet = RtpPacket(PCMA, 65535, 4294967200, 0xDEADBEEF, b"\xd5" * 160, marker=True)
    data = packet.pack()
    assert data[:2] == b"\x80\x88"
    assert RtpPacket.parse(data) == packet
    # One CSRC, a header extension of one word and 3 bytes of padding.
    fancy = (
        bytes([0xB1, 0x00]) + data[2:12] + b"\x00\x00\x00\x01"
        b"\xbe\xde\x00\x01" + b"\x00" * 4 + b"abc" + b"\x00\x00\x03"
    )
    parsed = RtpPacket.parse(fancy)
    assert (parsed.payload_type, parsed.payload) == (PCMU, b"abc")
    with pytest.raises(RtpParseError):
        RtpPacket.parse(b"\x00" * 12)
    with pytest.raises(RtpParseError):
        RtpPacket.parse(b"\x80")


def _rtp(seq: int) -> RtpPacket:
    return RtpPacket(PCMU, seq & 0xFFFF, seq * 160, 1, bytes([seq & 0xFF]))


def test_jitter_buffer_reorders_hides_loss_and_waits_for_late_packets() -> None:
    jitter = JitterBuffer(prefill=2)
    jitter.push(_rtp(65534))
    assert jitter.pop() is None  # prefilling
    jitter.push(_rtp(0))  # 65535 is late, 0 is ahead (wraps)
    jitter.push(_rtp(65535))
    played = [jitter.pop() for _ in range(3)]
    assert [p.seq if p else None for p in played] == [65534, 65535, 0]
    assert jitter.pop() is None  # underrun: waits for 1
    assert jitter.underruns == 1
    jitter.push(_rtp(1))
    jitter.push(_rtp(3))  # 2 is lost
    assert [p.seq if p else None for p in (jitter.pop(), jitter.pop(), jitter.pop())] == [
        1,
        None,
        3,
    ]
    assert jitter.lost == 1
    jitter.push(_rtp(2))  # too late now
    assert jitter.late == 1
    assert jitter.pop() is None


def test_jitter_buffer_bounds_its_delay() -> None:
    jitter = JitterBuffer(prefill=1, max_packets=5)
    for seq in range(20):
        jitter.push(_rtp(seq))
    assert len(jitter) == 5
    first = jitter.pop()
    assert first is not None
    assert first.seq == 15


def test_udptl_layout() -> None:
    # seq 0x0102, primary IFP of 1 byte, redundancy choice, two secondaries.
    packet = UdptlPacket(0x0102, b"\x02", (b"\x00", b"\xc0\x01"))
    data = packet.pack()
    assert data == b"\x01\x02\x01\x02\x00\x02\x01\x00\x02\xc0\x01"
    assert UdptlPacket.parse(data) == packet
    long_ifp = bytes(300)
    data = UdptlPacket(7, long_ifp).pack()
    assert data[2:4] == bytes([0x80 | (300 >> 8), 300 & 0xFF])
    assert UdptlPacket.parse(data).primary == long_ifp
    fec = b"\x00\x05\x01\x02\x80\x01\x00"
    assert UdptlPacket.parse(fec) == UdptlPacket(5, b"\x02", (), fec=True)
    for bad in (b"\x00", b"\x00\x01\x05\x02", b"\x00\x01\x01\x02", b"\x00\x01\x01\x02\x00\x02\x01"):
        with pytest.raises(UdptlParseError):
            UdptlPacket.parse(bad)


def test_udptl_redundancy_recovers_losses_and_drops_duplicates() -> None:
    encoder = UdptlEncoder(redundancy=2)
    ifps = [(65533 + n) & 0xFFFF for n in range(8)]  # wraps through 0
    packets = [encoder.encode(seq, bytes([n])) for n, seq in enumerate(ifps)]
    decoder = UdptlDecoder()
    got: list[tuple[int, bytes]] = []
    for index in (0, 1, 3, 3, 6, 7, 2):  # 2 lost (late), 4 and 5 lost
        got += decoder.decode(packets[index])
    assert got == [(seq, bytes([n])) for n, seq in enumerate(ifps)]
    assert decoder.recovered == 3
    assert decoder.duplicates == 2
    # Three in a row lost with redundancy 2: one is gone for good.
    decoder = UdptlDecoder()
    seqs = [s for p in (packets[0], packets[4]) for s, _ in decoder.decode(p)]
    assert seqs == [ifps[0], ifps[2], ifps[3], ifps[4]]
    assert decoder.lost == 1


def test_udptl_copies_and_max_datagram() -> None:
    encoder = UdptlEncoder(redundancy=3, max_datagram=40)
    first = encoder.encode(1, bytes(15))
    second = encoder.encode(2, bytes(15))
    copy = encoder.encode(2, bytes(15))
    assert second == copy  # a repeated copy is the same datagram
    third = encoder.encode(3, bytes(15))
    assert len(first) <= 40
    assert len(third) <= 40
    assert len(UdptlPacket.parse(third).secondary) == 1  # the rest did not fit


def test_jitter_buffer_follows_a_restarted_stream() -> None:
    jitter = JitterBuffer(prefill=1)
    for seq in (100, 101):
        jitter.push(_rtp(seq))
    assert [p.seq if p else None for p in (jitter.pop(), jitter.pop())] == [100, 101]
    # New SSRC (the far end restarted its stream) with lower numbers: played at once.
    jitter.push(RtpPacket(PCMU, 5, 0, 2, b"x"))
    packet = jitter.pop()
    assert packet is not None
    assert (packet.seq, packet.ssrc) == (5, 2)
    # Same SSRC, a jump of thousands: not thousands of lost slots, the new place.
    jitter.push(RtpPacket(PCMU, 9000, 0, 2, b"y"))
    packet = jitter.pop()
    assert packet is not None
    assert packet.seq == 9000


def test_udptl_decoder_follows_a_restarted_stream() -> None:
    decoder = UdptlDecoder()
    assert decoder.decode(UdptlPacket(500, b"a").pack()) == [(500, b"a")]
    assert decoder.decode(UdptlPacket(0, b"b").pack()) == [(0, b"b")]  # restarted
    assert decoder.decode(UdptlPacket(1, b"c", (b"b",)).pack()) == [(1, b"c")]
    assert decoder.decode(UdptlPacket(5000, b"d").pack()) == [(5000, b"d")]  # a jump
