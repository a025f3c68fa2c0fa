"""Who one delivered copy of a mail is for, and which mail it is: read from its headers.

The mail-poller keys its intake ledger with this and the validator decides with it, so
both read it the same way, from here (services never import each other).

**Header block.** Read with bytes operations only (a 2 MB ``To`` header costs a few
milliseconds); values longer than ``max_value_bytes`` are cut, so nothing downstream
ever parses more than that of one header.

**Envelope recipient.** A mail server that delivers a mail to several addresses of a
catch-all mailbox delivers one copy per recipient, each naming the address it was for
in a header it prepends: ``X-Original-To`` (Postfix, and the local relay),
``Delivered-To`` (Postfix, Dovecot, Exim, qmail, Gmail), ``Envelope-To`` (Exim) or
``X-Envelope-To`` (Sendmail, or a header your own MTA's configuration adds). The
envelope recipient of a copy is the *topmost* of these headers whose address is in an
account's realm and whose local part holds a digit:

- topmost, because every hop prepends: the headers our own MTAs add sit above anything
  the sender or an earlier hop wrote;
- in a realm, because the copy also names the mailbox it was finally delivered to
  (Dovecot's ``Delivered-To: fax@faxbox.test``), which is not a fax address;
- a digit, because a fax address names a number: an intake mailbox inside a realm
  (``Delivered-To: intake@fax.example.com`` on a single copy for all) names none.

A sender can write such a header into their own mail, and where no MTA of ours added
one above it, it is taken. That names one number the sender could have written in To
anyway (as a Bcc does); who may send is checked separately, on From.

``Received: ... for <addr>`` is not trusted: sending MTAs and intermediate MX hosts
stamp it on single-recipient transactions before the mail reaches the catch-all, so on
a single copy for all it would name one recipient and silently drop the others. An MTA
that can only say ``for`` should be configured to add ``X-Envelope-To`` instead.

**Identity.** The normalized Message-ID, or, for a mail without one, the SHA-256 of
what the sender wrote (From, To, Cc, Date, Subject and the body), so copies that differ
only in the trace headers hops add are one mail.

**Intake key.** mailbox + envelope recipient (or ``all``) + identity: two copies of one
mail for two recipients are two keys; the same copy fetched twice, or delivered again by
a second hop, is one.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

ENVELOPE_HEADERS: Final = ("x-original-to", "delivered-to", "envelope-to", "x-envelope-to")
ALL_RECIPIENTS: Final = "all"
DEFAULT_MAX_VALUE_BYTES: Final = 256 * 1024

_END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")
# A field starts at a line that does not begin with white space.
_FIELD_START = re.compile(rb"\r?\n(?![ \t])")
_FIELD_NAME = re.compile(rb"[!-9;-~]+")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_ANGLE = re.compile(r"<([^<>]*)>")
_IDENTITY_HEADERS: Final = ("from", "to", "cc", "date", "subject")


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """A mail's top-level header fields, top to bottom, names lower-cased."""

    fields: tuple[tuple[str, str], ...]
    size: int  # bytes of the whole header block, however long its fields were
    body_offset: int | None  # where the body starts; None when the block never ends

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key == name]

    def first(self, name: str) -> str | None:
        for key, value in self.fields:
            if key == name:
                return value
        return None


def read_headers(raw: bytes, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> HeaderBlock:
    """The header block of ``raw``; each value is unfolded and cut at ``max_value_bytes``."""
    end = _END_OF_HEADERS.search(raw)
    block = raw[: end.start()] if end else raw
    body_offset = end.end() if end else None
    if block.startswith((b"\r\n", b"\n")):
        return HeaderBlock((), 0, body_offset)
    fields: list[tuple[str, str]] = []
    for chunk in _FIELD_START.split(block):
        name, colon, _ = chunk[:200].partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name.rstrip()):
            continue  # an mbox "From " line or a broken line: not a field
        start = len(name) + 1
        text = chunk[start : start + max_value_bytes].decode("utf-8", "replace")
        fields.append((name.strip().decode("ascii", "replace").lower(), _unfold(text)))
    return HeaderBlock(tuple(fields), len(block), body_offset)


def _unfold(value: str) -> str:
    return _FOLD.sub("", value).strip()


def addresses(values: Iterable[str], limit: int | None = None) -> list[str]:
    """addr-specs (``local@domain``, domain lower-cased) of address header values, in order.

    ``email.utils.getaddresses`` rather than the header registry of ``policy.default``:
    the registry took 1.3 s for a 180 kB To header here, this 0.08 s.
    """
    found: list[str] = []
    for _display, address in email.utils.getaddresses(list(values)):
        local, at, domain = address.strip().rpartition("@")
        if len(local) >= 2 and local[0] == local[-1] == '"':  # "+44 20 7946 0958"@realm
            local = re.sub(r"\\(.)", r"\1", local[1:-1])
        if at and local and domain:
            found.append(f"{local}@{domain.lower()}")
            if limit is not None and len(found) >= limit:
                break
    return found


def envelope_candidates(headers: HeaderBlock) -> list[str]:
    """Addresses of the trusted envelope headers, topmost first, that could name a number."""
    candidates: list[str] = []
    for name, value in headers.fields:
        if name in ENVELOPE_HEADERS:
            for address in addresses([value], limit=1):
                local = address.rpartition("@")[0]
                if any(ch.isdigit() for ch in local) and address.lower() not in candidates:
                    candidates.append(address.lower())
    return candidates


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


async def envelope_recipient(
    candidates: Iterable[str], is_realm: Callable[[str], Awaitable[bool]]
) -> str | None:
    """The first candidate whose domain is an account's realm (looked up once per domain)."""
    known: dict[str, bool] = {}
    for address in candidates:
        domain = domain_of(address)
        if domain not in known:
            known[domain] = await is_realm(domain)
        if known[domain]:
            return address
    return None


def normalize_message_id(value: str) -> str | None:
    """``<Local@Domain>`` → ``Local@domain``: angle brackets, white space and comments
    around them go; the domain is case-insensitive, so it is lower-cased."""
    match = _ANGLE.search(value)
    core = (match.group(1) if match else value).strip()
    core = re.sub(r"\s+", "", core)
    if not core:
        return None
    local, at, domain = core.rpartition("@")
    return f"{local}@{domain.lower()}" if at else core


def message_identity(headers: HeaderBlock, raw: bytes, extra: str = "") -> str:
    """``mid:<normalized Message-ID>``, or ``sha256:`` of what the sender wrote.

    ``extra`` joins the hash (the mail-poller passes the size of a mail it only read the
    headers of, as the body is unknown then).
    """
    header = headers.first("message-id")
    normalized = normalize_message_id(header) if header else None
    if normalized:
        return f"mid:{normalized}"
    digest = hashlib.sha256()
    for name in _IDENTITY_HEADERS:
        for value in headers.values(name):
            digest.update(f"{name}:{value}\n".encode("utf-8", "replace"))
    digest.update(extra.encode())
    digest.update(b"\n")
    if headers.body_offset is not None:
        digest.update(raw[headers.body_offset :])
    return f"sha256:{digest.hexdigest()}"


def intake_key(mailbox: str, recipient: str | None, identity: str) -> str:
    """The intake ledger's key of one copy: mailbox + envelope recipient (or ``all``) +
    identity."""
    return f"{mailbox}|{(recipient or ALL_RECIPIENTS).lower()}|{identity}"
