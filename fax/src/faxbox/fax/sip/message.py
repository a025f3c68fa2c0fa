"""SIP messages (RFC 3261), digest authentication (RFC 2617/8760, MD5) and SDP (RFC 4566).

Only what a fax user agent needs: requests and responses over UDP, the headers a dialog
depends on (Via, From, To, Call-ID, CSeq, Contact, Content-Length, the auth headers),
compact header names, and SDP offers/answers for G.711 audio over RTP and T.38 over UDPTL.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

SIP_VERSION = "SIP/2.0"
BRANCH_MAGIC = "z9hG4bK"  # RFC 3261 8.1.1.7

# RFC 3261 7.3.3 and the IANA registry.
COMPACT_FORMS = {
    "v": "Via",
    "f": "From",
    "t": "To",
    "i": "Call-ID",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "e": "Content-Encoding",
    "k": "Supported",
    "s": "Subject",
    "o": "Event",
    "r": "Refer-To",
    "u": "Allow-Events",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "Content-Encoding",
        "Max-Forwards",
        "Supported",
        "Subject",
        "Allow",
        "User-Agent",
        "Server",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Authorization",
        "Proxy-Authorization",
        "Record-Route",
        "Route",
        "Reason",
        "Event",
        "Refer-To",
        "Allow-Events",
        "Expires",
        "Warning",
    )
}
# Headers whose values may be comma-joined lists (RFC 3261 7.3.1); never split the others
# (From/To display names and the auth headers contain commas of their own).
_LIST_HEADERS = frozenset({"via", "contact", "route", "record-route", "allow", "supported"})


class SipParseError(ValueError):
    """The datagram is not a SIP message we can read."""


def canonical_name(name: str) -> str:
    """``v`` → ``Via``, ``call-id`` → ``Call-ID``; unknown names keep their spelling."""
    stripped = name.strip()
    lower = stripped.lower()
    if lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return _CANONICAL.get(lower, stripped)


def new_branch() -> str:
    return BRANCH_MAGIC + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quotes and <...>."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    angle = False
    escaped = False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
            continue
        if quoted and ch == "\\":
            escaped = True
            current.append(ch)
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle = True
        elif not quoted and ch == ">":
            angle = False
        elif ch == "," and not quoted and not angle:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    tail = "".join(current).strip()
    if tail:
        parts.append(tail)
    return [p for p in parts if p]


def _split_params(text: str) -> tuple[str, dict[str, str | None]]:
    """``value;a=1;b`` → (``value``, {a: "1", b: None}); names lower-cased."""
    pieces = text.split(";")
    params: dict[str, str | None] = {}
    for piece in pieces[1:]:
        piece = piece.strip()
        if not piece:
            continue
        name, eq, val = piece.partition("=")
        params[name.strip().lower()] = val.strip() if eq else None
    return pieces[0].strip(), params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass
class Headers:
    """Ordered header fields; names stored canonically, lookups case-insensitive."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str, default: str | None = None) -> str | None:
        key = canonical_name(name).lower()
        for n, v in self.items:
            if n.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value, comma-joined list headers split into their elements."""
        key = canonical_name(name).lower()
        out: list[str] = []
        for n, v in self.items:
            if n.lower() == key:
                out.extend(split_list(v) if key in _LIST_HEADERS else [v])
        return out

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def add(self, name: str, value: str) -> None:
        self.items.append((canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every field of that name with one (at the first one's position)."""
        key = canonical_name(name)
        for i, (n, _) in enumerate(self.items):
            if n.lower() == key.lower():
                self.items[i] = (key, value)
                self.items[i + 1 :] = [
                    item for item in self.items[i + 1 :] if item[0].lower() != key.lower()
                ]
                return
        self.items.append((key, value))

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self.items = [item for item in self.items if item[0].lower() != key]

    def copy(self) -> Headers:
        return Headers(list(self.items))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)


@dataclass
class SipMessage:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    # Convenience accessors for the fields every message has -------------------------

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self.headers.get("CSeq") or "")

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise SipParseError("no Via header")
        return vias[0]

    @property
    def from_(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("From") or "")

    @property
    def to(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("To") or "")

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _head(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        lines = [self._head()]
        for name, value in self.headers:
            if name == "Content-Length":
                continue
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    def __bytes__(self) -> bytes:
        return self.serialize()


@dataclass
class SipRequest(SipMessage):
    method: str = "OPTIONS"
    uri: str = ""

    def _head(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"


@dataclass
class SipResponse(SipMessage):
    status: int = 200
    reason: str = "OK"

    def _head(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"


REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    503: "Service Unavailable",
    603: "Decline",
}


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """One SIP message from one UDP datagram (the body is cut to Content-Length)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError("header section is not UTF-8") from exc
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():  # keep-alive CRLFs before a message
        lines.pop(0)
    if not lines:
        raise SipParseError("empty message")
    start = lines[0].strip()
    headers = Headers()
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":  # folded continuation (RFC 3261 7.3.1)
            if not headers.items:
                raise SipParseError("continuation line before any header")
            name, value = headers.items[-1]
            headers.items[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or " " in name.strip():
            raise SipParseError(f"bad header line {line!r}")
        headers.add(name, value.strip())
    length_text = headers.get("Content-Length")
    if length_text is not None:
        try:
            length = int(length_text)
        except ValueError as exc:
            raise SipParseError(f"bad Content-Length {length_text!r}") from exc
        if length < 0 or length > len(body):
            raise SipParseError("body shorter than Content-Length")
        body = body[:length]
    message: SipRequest | SipResponse
    if start.startswith(SIP_VERSION + " "):
        parts = start.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit() or len(parts[1]) != 3:
            raise SipParseError(f"bad status line {start!r}")
        message = SipResponse(
            headers=headers,
            body=body,
            status=int(parts[1]),
            reason=parts[2] if len(parts) > 2 else "",
        )
    else:
        parts = start.split(" ")
        if len(parts) != 3 or parts[2] != SIP_VERSION or not parts[0].isalpha():
            raise SipParseError(f"bad request line {start!r}")
        message = SipRequest(headers=headers, body=body, method=parts[0].upper(), uri=parts[1])
    for required in ("Via", "CSeq", "Call-ID", "From", "To"):
        if required not in headers:
            raise SipParseError(f"missing {required} header")
    return message


# --- Header values ----------------------------------------------------------------------


@dataclass
class Via:
    host: str
    port: int | None = None
    transport: str = "UDP"
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str:
        return self.params.get("branch") or ""

    @classmethod
    def parse(cls, value: str) -> Via:
        sent, params = _split_params(value)
        proto, _, hostport = sent.partition(" ")
        parts = proto.replace(" ", "").split("/")
        if len(parts) != 3 or parts[0].upper() != "SIP" or not hostport.strip():
            raise SipParseError(f"bad Via {value!r}")
        host, port = split_hostport(hostport.strip())
        return cls(host=host, port=port, transport=parts[2].upper(), params=params)

    def __str__(self) -> str:
        hostport = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {hostport}{_format_params(self.params)}"


def split_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):  # IPv6 reference
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, colon, port = text.partition(":")
    if colon:
        if not port.isdigit():
            raise SipParseError(f"bad port in {text!r}")
        return host, int(port)
    return host, None


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, value: str) -> CSeq:
        parts = value.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise SipParseError(f"bad CSeq {value!r}")
        return cls(int(parts[0]), parts[1].upper())

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


@dataclass
class SipUri:
    """``sip:user@host:port;params`` (no headers part)."""

    host: str
    user: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    scheme: str = "sip"

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        if not colon or scheme.lower() not in ("sip", "sips"):
            raise SipParseError(f"not a SIP URI: {text!r}")
        rest = rest.split("?", 1)[0]
        main, params = _split_params(rest)
        user: str | None = None
        if "@" in main:
            user, _, main = main.rpartition("@")
        host, port = split_hostport(main)
        if not host:
            raise SipParseError(f"no host in {text!r}")
        return cls(host=host, user=user, port=port, params=params, scheme=scheme.lower())

    def __str__(self) -> str:
        userinfo = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        hostport = host if self.port is None else f"{host}:{self.port}"
        return f"{self.scheme}:{userinfo}{hostport}{_format_params(self.params)}"


@dataclass
class NameAddr:
    """From/To/Contact: ``"Display" <uri>;tag=x`` or the bare ``uri;tag=x`` form."""

    uri: str
    display: str = ""
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @classmethod
    def parse(cls, value: str) -> NameAddr:
        value = value.strip()
        if "<" in value:
            display, _, rest = value.partition("<")
            uri, close, params_text = rest.partition(">")
            if not close:
                raise SipParseError(f"unclosed < in {value!r}")
            _, params = _split_params(params_text)
            display = display.strip()
            if display.startswith('"') and display.endswith('"') and len(display) >= 2:
                display = display[1:-1]
            return cls(uri=uri.strip(), display=display, params=params)
        uri, params = _split_params(value)  # addr-spec: parameters belong to the header
        return cls(uri=uri, params=params)

    def __str__(self) -> str:
        display = f'"{self.display}" ' if self.display else ""
        return f"{display}<{self.uri}>{_format_params(self.params)}"


# --- Digest authentication (RFC 2617, RFC 8760 for SIP; MD5 only) -------------------------


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """``Digest realm="x", nonce="y", qop="auth"`` → ("Digest", {...}), names lower-cased."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    for match in re.finditer(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)', rest):
        raw = match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[match.group(1).lower()] = raw
    return scheme, params


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def digest_authorization(
    challenge: str,
    credentials: Credentials,
    method: str,
    uri: str,
    *,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization/Proxy-Authorization value answering a Digest challenge."""
    scheme, params = parse_auth_params(challenge)
    if scheme.lower() != "digest":
        raise ValueError(f"unsupported authentication scheme {scheme!r}")
    algorithm = params.get("algorithm", "MD5")
    if algorithm.upper() not in ("MD5", "MD5-SESS"):
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    realm = params.get("realm", "")
    nonce = params.get("nonce", "")
    qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in qops else None
    if qops and qop is None:
        raise ValueError(f"unsupported qop {params['qop']!r}")
    cnonce = cnonce or secrets.token_hex(8)
    ha1 = _md5(f"{credentials.username}:{realm}:{credentials.password}")
    if algorithm.upper() == "MD5-SESS":
        ha1 = _md5(f"{ha1}:{nonce}:{cnonce}")
    ha2 = _md5(f"{method}:{uri}")
    nc_text = f"{nc:08x}"
    if qop:
        response = _md5(f"{ha1}:{nonce}:{nc_text}:{cnonce}:{qop}:{ha2}")
    else:
        response = _md5(f"{ha1}:{nonce}:{ha2}")
    fields = [
        f'username="{credentials.username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        f'response="{response}"',
        f"algorithm={algorithm}",
    ]
    if "opaque" in params:
        fields.append(f'opaque="{params["opaque"]}"')
    if qop:
        fields += [f"qop={qop}", f"nc={nc_text}", f'cnonce="{cnonce}"']
    return "Digest " + ", ".join(fields)


# --- SDP ----------------------------------------------------------------------------------

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


def answer_t38(offer: T38Params, ours: T38Params | None = None) -> T38Params:
    """Our answer to a T.38 offer: the lower version and datagram size, their rate management."""
    mine = ours or T38Params()
    return T38Params(
        version=min(offer.version, mine.version),
        max_bit_rate=min(offer.max_bit_rate, mine.max_bit_rate),
        rate_management=offer.rate_management,
        max_buffer=mine.max_buffer,
        max_datagram=mine.max_datagram,
        udp_ec="t38UDPRedundancy" if offer.udp_ec != "t38UDPNoEC" else "t38UDPNoEC",
    )
