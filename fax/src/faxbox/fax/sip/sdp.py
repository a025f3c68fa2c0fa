"""SDP (RFC 4566) offers and answers for fax: G.711 audio over RTP, T.38 over UDPTL.

``SessionDescription`` parses and writes a body; ``sdp_of`` reads the one a SIP message
carries (None when it has none we can use). The offer/answer rules (RFC 3264) we apply
are ``choose_codec`` for audio and ``answer_t38`` for T.38.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from faxbox.fax.sip.message import SipMessage, SipParseError

PCMU = 0
PCMA = 8
CODEC_NAMES = {PCMU: "PCMU", PCMA: "PCMA"}
MediaKind = Literal["audio", "t38"]


@dataclass(frozen=True)
class T38Params:
    version: int = 0
    max_bit_rate: int = 14400
    rate_management: str = "transferredTCF"
    max_buffer: int = 2000
    max_datagram: int = 400
    udp_ec: str = "t38UDPRedundancy"
    fill_bit_removal: bool = False
    transcoding_mmr: bool = False
    transcoding_jbig: bool = False

    def attributes(self) -> list[tuple[str, str | None]]:
        attrs: list[tuple[str, str | None]] = [
            ("T38FaxVersion", str(self.version)),
            ("T38MaxBitRate", str(self.max_bit_rate)),
        ]
        for flag, name in (
            (self.fill_bit_removal, "T38FaxFillBitRemoval"),
            (self.transcoding_mmr, "T38FaxTranscodingMMR"),
            (self.transcoding_jbig, "T38FaxTranscodingJBIG"),
        ):
            if flag:
                attrs.append((name, None))
        attrs += [
            ("T38FaxRateManagement", self.rate_management),
            ("T38FaxMaxBuffer", str(self.max_buffer)),
            ("T38FaxMaxDatagram", str(self.max_datagram)),
            ("T38FaxUdpEC", self.udp_ec),
        ]
        return attrs

    @classmethod
    def from_attributes(cls, attrs: Iterable[tuple[str, str | None]]) -> T38Params:
        values = {name.lower(): value for name, value in attrs}

        def number(name: str, default: int) -> int:
            raw = values.get(name.lower())
            try:
                return int(raw) if raw is not None else default
            except ValueError:
                return default

        def flag(name: str) -> bool:
            key = name.lower()
            return key in values and values[key] in (None, "1")

        return cls(
            version=number("T38FaxVersion", 0),
            max_bit_rate=number("T38MaxBitRate", 14400),
            rate_management=values.get("t38faxratemanagement") or "transferredTCF",
            max_buffer=number("T38FaxMaxBuffer", 2000),
            max_datagram=number("T38FaxMaxDatagram", 400),
            udp_ec=values.get("t38faxudpec") or "t38UDPRedundancy",
            fill_bit_removal=flag("T38FaxFillBitRemoval"),
            transcoding_mmr=flag("T38FaxTranscodingMMR"),
            transcoding_jbig=flag("T38FaxTranscodingJBIG"),
        )


@dataclass
class MediaDescription:
    media: str  # "audio" | "image" | ...
    port: int
    proto: str  # "RTP/AVP" | "udptl" | ...
    formats: list[str]
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    connection: str | None = None

    def attribute(self, name: str) -> str | None:
        for n, v in self.attributes:
            if n.lower() == name.lower():
                return v
        return None

    @property
    def is_t38(self) -> bool:
        return self.media == "image" and self.proto.lower() == "udptl" and "t38" in self.formats

    @property
    def is_g711(self) -> bool:
        return self.media == "audio" and self.proto.upper() == "RTP/AVP"

    @property
    def payload_types(self) -> list[int]:
        return [int(f) for f in self.formats if f.isdigit()]


@dataclass
class SessionDescription:
    address: str
    media: list[MediaDescription]
    session_id: int = 0
    version: int = 0
    username: str = "faxbox"
    session_name: str = "faxbox"

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        address = ""
        session_id = version = 0
        username = "-"
        name = "-"
        media: list[MediaDescription] = []
        for raw in text.replace("\r\n", "\n").split("\n"):
            line = raw.strip()
            if len(line) < 2 or line[1] != "=":
                continue
            kind, value = line[0], line[2:]
            if kind == "o":
                parts = value.split()
                if len(parts) >= 6:
                    username = parts[0]
                    session_id = int(parts[1]) if parts[1].isdigit() else 0
                    version = int(parts[2]) if parts[2].isdigit() else 0
            elif kind == "s":
                name = value
            elif kind == "c":
                parts = value.split()
                if len(parts) < 3:
                    raise SipParseError(f"bad SDP connection line {line!r}")
                addr = parts[2].split("/")[0]
                if media:
                    media[-1].connection = addr
                else:
                    address = addr
            elif kind == "m":
                parts = value.split()
                if len(parts) < 3 or not parts[1].split("/")[0].isdigit():
                    raise SipParseError(f"bad SDP media line {line!r}")
                media.append(
                    MediaDescription(
                        media=parts[0],
                        port=int(parts[1].split("/")[0]),
                        proto=parts[2],
                        formats=parts[3:],
                    )
                )
            elif kind == "a" and media:
                attr, colon, attr_value = value.partition(":")
                media[-1].attributes.append((attr, attr_value if colon else None))
        if not address and not all(m.connection for m in media):
            raise SipParseError("SDP without a connection address")
        return cls(
            address=address,
            media=media,
            session_id=session_id,
            version=version,
            username=username,
            session_name=name,
        )

    def serialize(self) -> bytes:
        lines = [
            "v=0",
            f"o={self.username} {self.session_id} {self.version} IN IP4 {self.address}",
            f"s={self.session_name}",
            f"c=IN IP4 {self.address}",
            "t=0 0",
        ]
        for m in self.media:
            lines.append(f"m={m.media} {m.port} {m.proto} {' '.join(m.formats)}")
            if m.connection and m.connection != self.address:
                lines.append(f"c=IN IP4 {m.connection}")
            lines += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in m.attributes]
        return ("\r\n".join(lines) + "\r\n").encode("ascii")

    def endpoint(self, m: MediaDescription) -> tuple[str, int]:
        return (m.connection or self.address, m.port)

    def find(self, kind: MediaKind) -> MediaDescription | None:
        """The first usable (non-zero port) stream of that kind."""
        for m in self.media:
            if m.port == 0:
                continue
            if kind == "t38" and m.is_t38:
                return m
            if kind == "audio" and m.is_g711:
                return m
        return None


def audio_media(port: int, payload_types: Iterable[int] = (PCMU, PCMA)) -> MediaDescription:
    pts = list(payload_types)
    attrs: list[tuple[str, str | None]] = [
        ("rtpmap", f"{pt} {CODEC_NAMES[pt]}/8000") for pt in pts if pt in CODEC_NAMES
    ]
    attrs += [("ptime", "20"), ("sendrecv", None)]
    return MediaDescription("audio", port, "RTP/AVP", [str(pt) for pt in pts], attrs)


def t38_media(port: int, params: T38Params | None = None) -> MediaDescription:
    return MediaDescription("image", port, "udptl", ["t38"], (params or T38Params()).attributes())


def choose_codec(offer: MediaDescription, supported: Iterable[int] = (PCMU, PCMA)) -> int | None:
    """The first payload type in the offer's order that we support (RFC 3264 6.1)."""
    ours = set(supported)
    for pt in offer.payload_types:
        if pt in ours:
            return pt
    return None


NO_EC = "t38UDPNoEC"
REDUNDANCY = "t38UDPRedundancy"
FEC = "t38UDPFEC"
REDUNDANT_COPIES = 3  # earlier IFPs repeated in each UDPTL packet with t38UDPRedundancy


def answer_t38(offer: T38Params, ours: T38Params | None = None) -> T38Params:
    """Our answer to a T.38 offer: the lower version and bit rate, their rate management,
    our datagram size (what we can take in), and error recovery no stronger than either
    side's: no EC if either wants none; redundancy otherwise (an FEC offer too: the
    answerer may step down to redundancy, and we do not encode FEC)."""
    mine = ours or T38Params()
    udp_ec = NO_EC if NO_EC in (offer.udp_ec, mine.udp_ec) else REDUNDANCY
    return T38Params(
        version=min(offer.version, mine.version),
        max_bit_rate=min(offer.max_bit_rate, mine.max_bit_rate),
        rate_management=offer.rate_management,
        max_buffer=mine.max_buffer,
        max_datagram=mine.max_datagram,
        udp_ec=udp_ec,
    )


def redundancy_for(udp_ec: str) -> int:
    """How many earlier IFPs each UDPTL packet we send repeats under ``udp_ec``."""
    return 0 if udp_ec == NO_EC else REDUNDANT_COPIES


def sdp_of(message: SipMessage) -> SessionDescription | None:
    """The session description ``message`` carries, or None (no body, another content
    type, or one we cannot read: the caller answers 488 or ignores it)."""
    if not message.body or message.content_type not in ("application/sdp", ""):
        return None
    try:
        return SessionDescription.parse(message.body)
    except (SipParseError, ValueError, UnicodeDecodeError):
        return None
