"""SIP messages (RFC 3261): parsing, building, and the header values a dialog reads.

Requests and responses, the headers a dialog depends on (Via, From, To, Call-ID, CSeq,
Contact, Content-Length), compact header names, folded lines and comma-joined lists.
Bodies are bytes; what they mean (SDP) and the auth headers' contents (digest) are
their own modules.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

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
    "x": "Session-Expires",
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
        "Require",
        "Proxy-Require",
        "Unsupported",
        "RSeq",
        "RAck",
        "Session-Expires",
        "Min-SE",
        "Retry-After",
    )
}
# Headers whose values may be comma-joined lists (RFC 3261 7.3.1); never split the others
# (From/To display names and the auth headers contain commas of their own).
_LIST_HEADERS = frozenset(
    {"via", "contact", "route", "record-route", "allow", "supported", "require", "unsupported"}
)


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

    def tokens(self, name: str) -> set[str]:
        """The lower-cased option tags or methods of a list header (Supported, Allow)."""
        return {
            v.split(";")[0].strip().lower() for v in self.get_all(name) if v.split(";")[0].strip()
        }

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
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    503: "Service Unavailable",
    504: "Server Time-out",
    603: "Decline",
    606: "Not Acceptable",
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
