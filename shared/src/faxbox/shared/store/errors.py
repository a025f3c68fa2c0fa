"""Domain errors raised by the store.

Callers (the admin CLI, the services) catch these instead of PyMongo's errors, so a
message shown to an operator names the realm, address or number that clashed rather
than an index or a BSON key pattern. Every message is one line.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class NotFound(StoreError):
    """The requested document does not exist."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class DuplicateRealm(StoreError):
    """Another account already uses this realm."""

    def __init__(self, realm: str) -> None:
        super().__init__(f"realm {realm!r} is already used by another account")
        self.realm = realm


class DuplicateEmail(StoreError):
    """Another user already has this e-mail address (compared case-insensitively)."""

    def __init__(self, email: str) -> None:
        super().__init__(f"e-mail address {email!r} is already used by another user")
        self.email = email


class DuplicateCarrier(StoreError):
    """Another carrier already has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"carrier {name!r} already exists")
        self.name = name


class NumberAlreadyAssigned(StoreError):
    """The number is assigned to a faxbox already."""

    def __init__(self, number: str, faxbox_id: str) -> None:
        super().__init__(f"number {number} is already assigned to faxbox {faxbox_id}")
        self.number = number
        self.faxbox_id = faxbox_id


class DocumentCorrupt(StoreError):
    """A stored document's bytes do not match the checksum recorded when it was written."""

    def __init__(self, file_id: str, expected: str, actual: str, reason: str = "") -> None:
        super().__init__(
            f"document {file_id} is corrupt: "
            + (reason or f"sha256 {actual} differs from the recorded {expected}")
        )
        self.file_id = file_id


class InvalidCursor(StoreError, ValueError):
    """A pagination cursor could not be decoded (tampered with, or from another query)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid pagination cursor: {reason}")


class NumberHeldByAnotherAccount(StoreError):
    """The number is in another account's inventory (or assigned to its faxboxes)."""

    def __init__(self, number: str) -> None:
        super().__init__(f"number {number} belongs to another account")
        self.number = number


class NumberNotInInventory(StoreError):
    """A faxbox may only be given a number its account holds."""

    def __init__(self, number: str, realm: str) -> None:
        super().__init__(
            f"number {number} is not in the inventory of account {realm}; a platform or "
            f"reseller admin adds it first (faxbox number add --realm {realm} --number {number})"
        )
        self.number = number
        self.realm = realm


class NumberInUse(StoreError):
    """The number is assigned to a faxbox, so it cannot leave its account."""

    def __init__(self, number: str, faxbox_id: str) -> None:
        super().__init__(f"number {number} is assigned to faxbox {faxbox_id}; unassign it first")
        self.number = number
        self.faxbox_id = faxbox_id


class CallerIdNotOwned(StoreError, ValueError):
    """A caller id must be a number the faxbox (or, where allowed, its account) holds."""

    def __init__(self, number: str, scope: str, owned: list[str]) -> None:
        listed = ", ".join(owned) if owned else "none yet"
        super().__init__(
            f"caller id {number} is not one of the {scope}'s own numbers ({listed}); "
            "a fax may only present a number it owns"
        )
        self.number = number
        self.scope = scope
