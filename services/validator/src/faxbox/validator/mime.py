"""Reading a user's email: who sent it, to which fax address, and which parts are documents.

The top-level header block is read by ``faxbox.shared.envelope`` with bytes operations
(addresses through ``email.utils.getaddresses``, never the header registry, which took
over a second for a 180 kB To header); the parts by the standard library's ``email``
with ``email.policy.default``, every part header read guarded, because hostile or
broken mail makes the registry raise on inputs the feed parser itself accepted.

Caps (``Caps``): the header block's bytes, the parts (counted while the parser creates
them), the nesting depth and the addresses in To and Cc. Past one the mail is rejected
with that cap's own reason and not read further.

Attachment candidates (the issue's rule):

- a leaf part is a *candidate* when it is an attachment (``Content-Disposition:
  attachment``), carries a file name, or is ``application/pdf`` / ``image/tiff``;
- a candidate is a PDF or TIFF *document* by its content type; generic types
  (``application/octet-stream`` and its cousins) are recognised by the file name's
  extension and by the magic bytes (``%PDF-``; ``II*\\0``, ``MM\\0*`` and BigTIFF's ``+``);
- inline images (an ``image/*`` part that is not an attachment and has a Content-ID:
  signature logos, pictures inside HTML) and body text are ignored; TIFF is never
  taken for a logo;
- parts of a forwarded email (``message/rfc822``) count only when the message around
  them has no PDF or TIFF at all: the shallowest level that has documents wins, so
  forwarding a fax with a cover PDF of one's own faxes the cover, and forwarding one
  without faxes the forwarded document.
"""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.policy import Policy
from enum import StrEnum
from typing import Final

from faxbox.render import sniff_kind
from faxbox.shared.bus import PermanentError
from faxbox.shared.contracts import RejectionCode
from faxbox.shared.envelope import (
    HeaderBlock,
    addresses,
    envelope_candidates,
    message_identity,
    read_headers,
)

log = logging.getLogger(__name__)

VISIBLE_RECIPIENT_HEADERS: Final = ("to", "cc")
# What is read of each header of a mail whose header block is over the cap: enough for
# From and a realm address to tell the sender, never the whole of a 2 MB To header.
_OVERSIZE_HEADER_VALUE_BYTES: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class Caps:
    """How much of one mail is parsed at most; past a cap it is rejected, not read on."""

    header_bytes: int = 256 * 1024
    parts: int = 200
    depth: int = 20
    addresses: int = 100


@dataclass(frozen=True, slots=True)
class CapExceeded:
    code: RejectionCode
    message: str


_GENERIC_TYPES: Final = frozenset(
    {
        "application/octet-stream",
        "application/x-octet-stream",
        "application/binary",
        "application/download",
        "application/x-download",
        "application/force-download",
        "application/unknown",
        "application/save",
        "binary/octet-stream",
    }
)
_PDF_TYPES: Final = frozenset({"application/pdf", "application/x-pdf", "application/acrobat"})
_TIFF_TYPES: Final = frozenset({"image/tiff", "image/tif", "image/x-tiff", "image/x-tif"})


class UndecodableMail(PermanentError):
    """The stored bytes are not an email we can read at all."""


class DocumentKind(StrEnum):
    PDF = "pdf"
    TIFF = "tiff"


class PartRole(StrEnum):
    DOCUMENT = "document"  # a PDF or TIFF candidate
    OTHER = "other"  # an attachment we cannot fax (Word file, PNG, …)
    INLINE_IMAGE = "inline_image"  # signature logo or picture in the HTML body
    FORWARDED = "forwarded"  # a message/rfc822 part (its own parts are listed too)


@dataclass(frozen=True, slots=True)
class Part:
    """A part of the email that is not body text."""

    role: PartRole
    filename: str | None
    content_type: str
    data: bytes = field(repr=False)
    kind: DocumentKind | None = None
    depth: int = 0  # 0 = the email itself, 1 = inside a forwarded email, …

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def label(self) -> str:
        """How the part is named to the sender."""
        name = self.filename or "(no name)"
        return f"{name} ({self.content_type})"


@dataclass(frozen=True, slots=True)
class Mail:
    message_id: str | None
    identity: str  # what mail this is, whichever copy (faxbox.shared.envelope)
    senders: tuple[str, ...]  # every address in From, lower-cased
    from_header: str
    envelope: tuple[str, ...]  # envelope header addresses that may name a number, topmost first
    visible: tuple[str, ...]  # addr-specs from To and Cc, in order, distinct
    automatic: str | None  # why this is automatic mail (bounce, list, auto-reply), if it is
    parts: tuple[Part, ...]
    authentication_results: tuple[str, ...]
    cap: CapExceeded | None = None  # a cap this mail went past; it was not read further

    @property
    def sender(self) -> str | None:
        """From's address, lower-cased (the first, if there are several)."""
        return self.senders[0] if self.senders else None

    @property
    def sender_domain(self) -> str | None:
        return self.sender.rpartition("@")[2] if self.sender and "@" in self.sender else None

    def documents(self) -> tuple[Part, ...]:
        """The PDF/TIFF parts of the shallowest level that has any."""
        docs = [p for p in self.parts if p.role is PartRole.DOCUMENT]
        if not docs:
            return ()
        level = min(p.depth for p in docs)
        return tuple(p for p in docs if p.depth == level)

    def others(self) -> tuple[Part, ...]:
        return tuple(p for p in self.parts if p.role in (PartRole.OTHER, PartRole.INLINE_IMAGE))


# --- headers ------------------------------------------------------------------------------


def _automatic(headers: HeaderBlock, sender: str | None) -> str | None:
    """Why a mail was sent by a machine (RFC 3834 and common practice), or None.

    The one rule Faxbox has: such a mail is neither faxed nor answered, and the reason is
    the validator's decision (the notifier is never asked to answer one).
    """
    auto = headers.first("auto-submitted")
    if auto is not None:
        value = auto.split(";")[0].strip().lower()
        if value and value != "no":
            return f"Auto-Submitted: {value}"
    precedence = (headers.first("precedence") or "").strip().lower()
    if precedence in ("bulk", "list", "junk"):
        return f"Precedence: {precedence}"
    if headers.first("list-id") is not None:
        return "mailing list (List-Id)"
    if headers.first("list-unsubscribe") is not None:
        return "mailing list (List-Unsubscribe)"
    return_path = headers.first("return-path")
    if return_path is not None and return_path.strip() in ("<>", ""):
        return "bounce (empty Return-Path)"
    if sender and sender.split("@")[0] in ("mailer-daemon", "postmaster"):
        return f"bounce (from {sender})"
    content_type = (headers.first("content-type") or "").split(";")[0].strip().lower()
    if content_type == "multipart/report":
        return "delivery or read report (multipart/report)"
    return None


# --- parts --------------------------------------------------------------------------------


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "application/octet-stream"


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def _clean_filename(name: str) -> str | None:
    if "=?" in name and "?=" in name:
        # Some clients put RFC 2047 words where RFC 2231 belongs; the registry decodes
        # most of them, this catches the ones it leaves alone.
        try:
            name = str(make_header(decode_header(name)))
        except Exception:
            log.debug("could not decode file name %r", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]  # "C:\\fakepath\\scan.pdf"
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:200] or None


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if not name:
        return None
    return _clean_filename(str(name))


def _payload(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        return b""
    return data if isinstance(data, bytes) else b""


def magic_kind(data: bytes) -> DocumentKind | None:
    # The renderer's own test: what it reads (classic TIFF and BigTIFF, a PDF header
    # after up to 1 KB of junk) is what counts as a document here.
    found = sniff_kind(data)
    return None if found is None else DocumentKind(found.value)


def _extension_kind(filename: str | None) -> DocumentKind | None:
    if not filename:
        return None
    extension = filename.rpartition(".")[2].lower() if "." in filename else ""
    if extension == "pdf":
        return DocumentKind.PDF
    if extension in ("tif", "tiff"):
        return DocumentKind.TIFF
    return None


def _kind(content_type: str, filename: str | None, data: bytes) -> DocumentKind | None:
    if content_type in _PDF_TYPES:
        return DocumentKind.PDF
    if content_type in _TIFF_TYPES:
        return DocumentKind.TIFF
    if content_type in _GENERIC_TYPES or content_type == "application/x-unknown-content-type":
        return _extension_kind(filename) or magic_kind(data)
    return None


def _leaf(part: Message, depth: int) -> Part | None:
    content_type = _content_type(part)
    disposition = _disposition(part)
    filename = _filename(part)
    maintype = content_type.partition("/")[0]
    if (
        maintype == "image"
        and content_type not in _TIFF_TYPES
        and disposition != "attachment"
        and any(key.lower() == "content-id" for key, _ in part.raw_items())
    ):
        return Part(PartRole.INLINE_IMAGE, filename, content_type, _payload(part), None, depth)
    candidate = (
        disposition == "attachment"
        or filename is not None
        or content_type in _PDF_TYPES
        or content_type in _TIFF_TYPES
    )
    if not candidate:
        return None  # body text, or a nameless part of the body
    data = _payload(part)
    kind = _kind(content_type, filename, data)
    role = PartRole.DOCUMENT if kind is not None else PartRole.OTHER
    return Part(role, filename, content_type, data, kind, depth)


class _TooManyParts(Exception):
    pass


class _CountingFactory:
    """The parser's message factory, stopping it at the ``limit``-th part it would create.

    The parser builds the whole tree before anything walks it; counting here stops a
    mail of a hundred thousand parts before it costs the time and memory of all of them.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.created = 0

    def __call__(self, policy: Policy) -> EmailMessage:
        self.created += 1
        if self.created > self.limit:
            raise _TooManyParts
        return EmailMessage(policy)


def _parts(root: Message, caps: Caps) -> tuple[list[Part], CapExceeded | None]:
    found: list[Part] = []
    stack: list[tuple[Message, int, int]] = [(root, 0, 0)]  # part, forward depth, nesting
    while stack:
        part, depth, nesting = stack.pop()
        if nesting > caps.depth:
            return found, _nested_too_deeply(caps)
        payload = part.get_payload()
        if isinstance(payload, list):
            children = [p for p in payload if isinstance(p, Message)]
            if _content_type(part).partition("/")[0] == "message":
                found.append(
                    Part(PartRole.FORWARDED, _filename(part), _content_type(part), b"", None, depth)
                )
                depth += 1
            # Reversed onto the stack so parts come out in the order the sender sees them.
            stack.extend((child, depth, nesting + 1) for child in reversed(children))
            continue
        leaf = _leaf(part, depth)
        if leaf is not None:
            found.append(leaf)
    return found, None


def _too_many_parts(caps: Caps) -> CapExceeded:
    return CapExceeded(
        RejectionCode.too_many_parts,
        f"The email has more than {caps.parts} parts; at most {caps.parts} are read, so "
        "it was not read further. Send the document attached to a new email of its own.",
    )


def _headers_too_large(size: int, caps: Caps) -> CapExceeded:
    return CapExceeded(
        RejectionCode.headers_too_large,
        f"The email's header lines are {size / 1024:.0f} kB long; at most "
        f"{caps.header_bytes / 1024:.0f} kB are read (a very long To or Cc line is the "
        "usual cause), so it was not read further. Send it to fewer addresses at once.",
    )


def _too_many_addresses(caps: Caps) -> CapExceeded:
    return CapExceeded(
        RejectionCode.too_many_addresses,
        f"The email is addressed to more than {caps.addresses} addresses (To and Cc); at "
        f"most {caps.addresses} are read, so it was not read further. Send it to fewer "
        "addresses at once.",
    )


def parse_mail(raw: bytes, caps: Caps = Caps()) -> Mail:
    """Read the raw message within ``caps``; raises ``UndecodableMail`` if it is not an
    email at all. CPU-bound (milliseconds for normal mail): run it off the event loop."""
    if not raw.strip():
        raise UndecodableMail("the stored mail is empty")
    headers = read_headers(raw, caps.header_bytes)
    if not headers.fields:
        raise UndecodableMail("the stored mail has no headers")
    cap: CapExceeded | None = None
    oversized = headers.size > caps.header_bytes
    if oversized:
        cap = _headers_too_large(headers.size, caps)

    def values(name: str) -> list[str]:
        found = headers.values(name)
        return [v[:_OVERSIZE_HEADER_VALUE_BYTES] for v in found] if oversized else found

    senders = tuple(dict.fromkeys(a.lower() for a in addresses(values("from"), 10)))
    visible = tuple(
        dict.fromkeys(
            addresses([v for n in VISIBLE_RECIPIENT_HEADERS for v in values(n)], caps.addresses + 1)
        )
    )
    if cap is None and len(visible) > caps.addresses:
        cap = _too_many_addresses(caps)
    parts: list[Part] = []
    if cap is None:
        factory = _CountingFactory(caps.parts)
        try:
            msg = email.message_from_bytes(
                raw, policy=email.policy.default.clone(message_factory=factory)
            )
            parts, cap = _parts(msg, caps)
        except _TooManyParts:
            cap = _too_many_parts(caps)
        except RecursionError:
            cap = _nested_too_deeply(caps)
        except Exception as exc:  # the feed parser is lenient; this is the hopeless case
            raise UndecodableMail(f"the stored mail cannot be parsed: {exc}") from exc
    message_id = headers.first("message-id")
    sender = senders[0] if senders else None
    return Mail(
        message_id=message_id[:998] if message_id else None,
        identity=message_identity(headers, raw),
        senders=senders,
        from_header=(headers.first("from") or "")[:998],
        envelope=tuple(envelope_candidates(headers)),
        visible=visible[: caps.addresses],
        automatic=_automatic(headers, sender),
        parts=tuple(parts) if cap is None else (),
        authentication_results=tuple(headers.values("authentication-results")),
        cap=cap,
    )


def _nested_too_deeply(caps: Caps) -> CapExceeded:
    return CapExceeded(
        RejectionCode.nested_too_deeply,
        f"The email's parts are nested more than {caps.depth} levels deep, which no mail "
        "program does; it was not read further. Send the document attached to a new, "
        "plain email.",
    )


def describe(parts: Iterable[Part]) -> str:
    return ", ".join(p.label for p in parts)
