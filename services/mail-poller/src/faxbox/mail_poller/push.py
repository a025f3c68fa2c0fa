"""Push from the IMAP server: a POST that wakes a watcher before IDLE would.

Dovecot tells an idling client about new mail only half a second after it sees it
(NOTIFY_DELAY_MSECS in its mailbox-watch.c). With ``deploy/dovecot/faxbox-push.lua``
loaded, Dovecot instead POSTs to a URL stored as metadata of the folder the moment a
mail is delivered or appended there. The active session registers that URL (RFC 5464
SETMETADATA on its folder) when the service knows the address the server can reach it
at (``FAXBOX_MAIL_POLLER_IMAP_PUSH_HOST``) and the server offers METADATA.

A push is only a wake-up: the session then looks at the folder over IMAP as after an
IDLE EXISTS. A lost push leaves the mail to IDLE; a forged one costs a SEARCH. Each
mailbox gets its own unguessable path, so a stale registration of an earlier process
is answered 404 and wakes nothing.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Final

from faxbox.mail_poller import metrics

PUSH_URL_KEY: Final = "/private/vendor/vendor.faxbox/push-url"
ROUTE: Final = "/imap-push/"


@dataclass(slots=True)
class PushTarget:
    """Where a mailbox's pushes arrive: the URL to register and the event they set."""

    mailbox: str
    url: str
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class PushHub:
    """Maps push paths to mailboxes; serves ``POST /imap-push/<token>``."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._targets: dict[str, PushTarget] = {}

    def target(self, mailbox: str) -> PushTarget:
        token = secrets.token_urlsafe(18)
        target = PushTarget(mailbox, f"{self.base_url}{ROUTE}{token}")
        self._targets[token] = target
        return target

    async def handle(self, method: str, path: str) -> tuple[str, str, bytes]:
        target = self._targets.get(path.removeprefix(ROUTE))
        if target is None:
            return "404 Not Found", "text/plain", b"unknown push target\n"
        if method != "POST":
            return "405 Method Not Allowed", "text/plain", b"POST only\n"
        metrics.PUSHES.labels(target.mailbox).inc()
        target.arrived.set()
        return "200 OK", "text/plain", b"ok\n"
