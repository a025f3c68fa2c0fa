"""Identities of an intake message: where it sits (ledger id) and what it is (message key)."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import re

_ANGLE = re.compile(r"<([^<>]*)>")


def ledger_id(mailbox: str, uid_validity: int, uid: int) -> str:
    """The ledger ``_id`` of one message: a UID means nothing without its UIDVALIDITY."""
    return f"{mailbox}|{uid_validity}|{uid}"


def extract_message_id(raw: bytes) -> str | None:
    """The Message-ID header as written, or None when absent or empty."""
    # Only the header block is parsed: a 20 MB attachment need not be decoded here.
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    value = headers.get("Message-ID")
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def normalize_message_id(value: str) -> str | None:
    """``<Local@Domain>`` → ``local@domain``-ish form used for duplicate detection.

    Angle brackets, folding whitespace and comments around them go; the domain part is
    case-insensitive (RFC 5321), so it is lower-cased; the local part is kept as is.
    """
    match = _ANGLE.search(value)
    core = (match.group(1) if match else value).strip()
    core = re.sub(r"\s+", "", core)
    if not core:
        return None
    local, at, domain = core.rpartition("@")
    return f"{local}@{domain.lower()}" if at else core


def message_key(raw: bytes) -> tuple[str, str | None]:
    """The unique key of a mail in the ledger, and its Message-ID header (as written).

    Mails without a usable Message-ID are keyed by the SHA-256 of their bytes, so the
    unique index never sees a null (FerretDB has no partial or sparse indexes).
    """
    header = extract_message_id(raw)
    normalized = normalize_message_id(header) if header else None
    if normalized:
        return f"mid:{normalized}", header
    return f"sha256:{hashlib.sha256(raw).hexdigest()}", header
