"""One active poller per mailbox: a held generation lease (``faxbox.shared.store.held``)
per mailbox; a standby takes the mailbox over once the holder's lease expired. Two
pollers that overlap through clock skew still publish a mail once (the outbox)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from pymongo.asynchronous.database import AsyncDatabase

from faxbox.shared.store.held import HeldLease

COLLECTION: Final = "mail_poller_leases"

Doc = dict[str, Any]


def lease_name(mailbox: str) -> str:
    # '#' separates a lease's name from its generation.
    return mailbox.replace("%", "%25").replace("#", "%23")


class MailboxLease(HeldLease):
    def __init__(
        self,
        db: AsyncDatabase[Doc],
        mailbox: str,
        holder: str,
        ttl_s: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(db[COLLECTION], lease_name(mailbox), holder, ttl_s, monotonic=monotonic)
        self.mailbox = mailbox
