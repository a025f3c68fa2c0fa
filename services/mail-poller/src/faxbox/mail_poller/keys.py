"""Identities of an intake message: where it sits (ledger id) and what it is (intake key)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from faxbox.shared.envelope import (
    envelope_candidates,
    envelope_recipient,
    intake_key,
    message_identity,
    read_headers,
)


def ledger_id(mailbox: str, uid_validity: int, uid: int) -> str:
    """The ledger ``_id`` of one message: a UID means nothing without its UIDVALIDITY."""
    return f"{mailbox}|{uid_validity}|{uid}"


@dataclass(frozen=True, slots=True)
class MessageKey:
    key: str  # mailbox|envelope recipient or "all"|Message-ID or content hash
    recipient: str | None  # the copy's envelope recipient, when it names one
    message_id: str | None  # the Message-ID header as written


async def message_key(
    mailbox: str,
    raw: bytes,
    is_realm: Callable[[str], Awaitable[bool]],
    size: int | None = None,
) -> MessageKey:
    """The intake key of one copy (the rule is in ``faxbox.shared.envelope``).

    ``size``: set when ``raw`` is only the header block of a mail over the size cap; it
    joins a content hash, the body being unknown.
    """
    headers = read_headers(raw)
    recipient = await envelope_recipient(envelope_candidates(headers), is_realm)
    identity = message_identity(headers, raw, "" if size is None else f"size:{size}")
    header = headers.first("message-id")
    return MessageKey(intake_key(mailbox, recipient, identity), recipient, header or None)
