"""The notifier's own interfaces: what handlers need from the outside world."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Protocol

from faxbox.shared.contracts import DocumentRef, Message
from faxbox.shared.store import Account, Faxbox, User


class MailDeferred(Exception):
    """The mail server could not take the mail now (connection, 4xx): try again later."""


class MailRefused(Exception):
    """The mail server refused the mail for good (5xx); the text is its answer."""


class Mailer(Protocol):
    async def send(self, message: EmailMessage, recipients: list[str]) -> None:
        """Hand the message to the server; raises MailDeferred or MailRefused."""


class Directory(Protocol):
    async def get_user(self, user_id: str) -> User: ...
    async def get_faxbox(self, faxbox_id: str) -> Faxbox: ...
    async def get_account(self, account_id: str) -> Account: ...


class Documents(Protocol):
    async def get(self, ref: DocumentRef) -> bytes: ...


class Publisher(Protocol):
    async def publish(self, message: Message) -> None: ...


@dataclass(frozen=True, slots=True)
class Claim:
    """This worker may send the mail ``key``, with this Message-ID.

    ``maybe_sent_before`` is True when an earlier claim was never completed: the
    earlier worker may have handed the mail to the server before it stopped.
    """

    key: str
    owner: str
    smtp_message_id: str
    maybe_sent_before: bool


@dataclass(frozen=True, slots=True)
class AlreadySent:
    key: str
    smtp_message_id: str
    recipients: tuple[str, ...]
    sent_at: datetime


class ClaimBusy(Exception):
    """Another worker holds the claim right now."""

    def __init__(self, key: str, retry_in_s: int) -> None:
        super().__init__(f"notification {key} is being sent by another worker")
        self.retry_in_s = retry_in_s


class Ledger(Protocol):
    async def claim(self, key: str, new_message_id: str) -> Claim | AlreadySent:
        """Take the right to send ``key``; raises ClaimBusy if someone else has it."""

    async def release(self, claim: Claim, reason: str) -> None:
        """Give the claim up (the mail was not sent), so a retry may take it at once."""

    async def mark_sent(
        self, claim: Claim, recipients: tuple[str, ...], sent_at: datetime
    ) -> None: ...
