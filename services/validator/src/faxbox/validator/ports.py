"""The validator's own interfaces to the outside: unit tests supply in-memory versions."""

from __future__ import annotations

from typing import Protocol

from faxbox.render import RenderedDocument
from faxbox.shared.store import Account, Faxbox, User
from faxbox.validator.authz import Candidate


class Directory(Protocol):
    async def account_by_realm(self, realm: str) -> Account | None:
        """The account whose realm is this (lower-cased) domain."""
        ...

    async def sender_candidates(self, account_id: str, sender: str) -> list[Candidate]:
        """Faxboxes of the account the (lower-cased) sender might match, with owners.

        May return more than match (the caller decides); must not miss a match.
        """
        ...

    async def holds_number(self, account_id: str, number: str) -> bool:
        """True if the number is in the account's inventory."""
        ...


class SubmissionDirectory(Protocol):
    """Lookups by id, for submissions that name their faxbox and user."""

    async def account(self, account_id: str) -> Account | None: ...

    async def faxbox(self, faxbox_id: str) -> Faxbox | None: ...

    async def user(self, user_id: str) -> User | None: ...

    async def holds_number(self, account_id: str, number: str) -> bool:
        """True if the number is in the account's inventory."""
        ...


class NumberInventory(Protocol):
    async def holds_number(self, account_id: str, number: str) -> bool: ...


class PageCounters(Protocol):
    """Pages faxed per key (user or account) and UTC day, reserved atomically."""

    async def used(self, key: str) -> int: ...

    async def reserve(self, key: str, fax_id: str, pages: int, limit: int) -> bool:
        """Add ``pages`` for ``fax_id`` unless the total would pass ``limit``.

        True if reserved (or reserved already for this fax id: redeliveries count once).
        """
        ...

    async def release(self, key: str, fax_id: str, pages: int) -> None: ...


class Renderer(Protocol):
    async def render(
        self, data: bytes, kind: str, resolution: str, max_pages: int
    ) -> RenderedDocument:
        """The fax TIFF; raises ``RenderRefused`` for a document that cannot be faxed."""
        ...


class Claims(Protocol):
    """Exclusive claims by unique key (one fax per number of a mail, one rejection each)."""

    async def claim(self, key: str, fax_id: str) -> bool:
        """True if ``fax_id`` holds ``key`` now: newly, or from an earlier delivery."""
        ...

    async def release(self, key: str, fax_id: str) -> None:
        """Give up a claim ``fax_id`` holds (an accepted copy rejected after claiming)."""
        ...
