"""Reading a user's email: who sent it, to which fax address, and which parts are documents.

Only the standard library parses (``email`` with ``email.policy.default``); every header
read is guarded, because hostile or broken mail makes the header registry raise on
inputs the feed parser itself accepted, and one odd header must never lose the mail.

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
import email.utils
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from enum import StrEnum
from typing import Final

from faxbox.render import sniff_kind
from faxbox.shared.bus import PermanentError

log = logging.getLogger(__name__)

RECIPIENT_HEADERS: Final = ("To", "Cc", "Delivered-To", "X-Original-To")
# Deeper than any mail client nests; hostile mail can nest thousands of levels.
MAX_DEPTH: Final = 32
MAX_PARTS: Final = 500
# Each distinct recipient domain costs a realm lookup; real fax mail names a handful.
MAX_RECIPIENTS: Final = 50

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
    sender: str | None  # From's address, lower-cased
    from_header: str
    recipients: tuple[str, ...]  # addr-specs from To, Cc, Delivered-To, X-Original-To
    automatic: str | None  # why this is automatic mail (bounce, list, auto-reply), if it is
    parts: tuple[Part, ...]
    authentication_results: tuple[str, ...]

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


def _raw_values(msg: Message, name: str) -> list[str]:
    """Header values as stored (unparsed), so a header the registry chokes on is kept."""
    wanted = name.lower()
    values: list[str] = []
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            values.append(re.sub(r"\r?\n[ \t]", " ", str(value)).strip())
    return values


def _addresses(msg: Message, name: str) -> list[str]:
    """addr-specs of an address header, in order."""
    found: list[str] = []
    try:
        for header in msg.get_all(name, []):
            for address in getattr(header, "addresses", ()):
                if address.username and address.domain:
                    found.append(f"{address.username}@{address.domain}")
        if found:
            return found
    except Exception:  # the registry raises on some malformed headers; fall back below
        log.debug("header %s could not be parsed; reading it raw", name, exc_info=True)
    for _display, addr in email.utils.getaddresses(_raw_values(msg, name)):
        if "@" in addr:
            found.append(addr)
    return found


def _first_value(msg: Message, name: str) -> str | None:
    values = _raw_values(msg, name)
    return values[0] if values else None


def _automatic(msg: Message, sender: str | None) -> str | None:
    auto = _first_value(msg, "Auto-Submitted")
    if auto is not None:
        value = auto.split(";")[0].strip().lower()
        if value and value != "no":
            return f"Auto-Submitted: {value}"
    precedence = (_first_value(msg, "Precedence") or "").strip().lower()
    if precedence in ("bulk", "list", "junk"):
        return f"Precedence: {precedence}"
    if _first_value(msg, "List-Id") is not None:
        return "mailing list (List-Id)"
    return_path = _first_value(msg, "Return-Path")
    if return_path is not None and return_path.strip() in ("<>", ""):
        return "bounce (empty Return-Path)"
    if sender and sender.split("@")[0] in ("mailer-daemon", "postmaster"):
        return f"bounce (from {sender})"
    try:
        if msg.get_content_type() == "multipart/report":
            return "delivery or read report (multipart/report)"
    except Exception:
        return None
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
        and _first_value(part, "Content-ID") is not None
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


def _parts(root: Message) -> list[Part]:
    found: list[Part] = []
    stack: list[tuple[Message, int, int]] = [(root, 0, 0)]  # part, forward depth, nesting
    visited = 0
    while stack and visited < MAX_PARTS:
        part, depth, nesting = stack.pop()
        visited += 1
        if nesting > MAX_DEPTH:
            continue
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
    return found


def parse_mail(raw: bytes) -> Mail:
    """Read the raw message; raises ``UndecodableMail`` if it is not an email at all."""
    if not raw.strip():
        raise UndecodableMail("the stored mail is empty")
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception as exc:  # the feed parser is lenient; this is the truly hopeless case
        raise UndecodableMail(f"the stored mail cannot be parsed: {exc}") from exc
    if not list(msg.raw_items()):
        raise UndecodableMail("the stored mail has no headers")
    senders = _addresses(msg, "From")
    sender = senders[0].lower() if senders else None
    recipients = [a for name in RECIPIENT_HEADERS for a in _addresses(msg, name)]
    message_id = _first_value(msg, "Message-ID")
    try:
        parts = _parts(msg)
    except RecursionError as exc:
        raise UndecodableMail("the mail's parts are nested too deeply") from exc
    return Mail(
        message_id=message_id[:998] if message_id else None,
        sender=sender,
        from_header=(_first_value(msg, "From") or "")[:998],
        recipients=tuple(dict.fromkeys(recipients))[:MAX_RECIPIENTS],
        automatic=_automatic(msg, sender),
        parts=tuple(parts),
        authentication_results=tuple(_raw_values(msg, "Authentication-Results")),
    )


def describe(parts: Iterable[Part]) -> str:
    return ", ".join(p.label for p in parts)
