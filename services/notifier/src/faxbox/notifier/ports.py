"""The notifier's own interfaces: what handlers need from the outside world."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

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
    generation: int = 1


class ClaimBusy(Exception):
    """Another worker holds the claim right now."""

    def __init__(self, key: str, retry_in_s: int) -> None:
        super().__init__(f"notification {key} is being sent by another worker")
        self.retry_in_s = retry_in_s


class SendClaims(Protocol):
    """Who may send a mail now: one worker at a time, another once it stopped."""

    async def claim(self, key: str, new_message_id: str) -> Claim:
        """Take the right to send ``key``; raises ClaimBusy if someone else has it.

        The first claim's ``new_message_id`` is the mail's Message-ID for good.
        """

    async def release(self, claim: Claim, reason: str) -> None:
        """Give the claim up (the mail was not sent), so a retry may take it at once."""
