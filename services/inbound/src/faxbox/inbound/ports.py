"""The inbound service's interfaces to the outside: the shared store serves both (and
``faxbox.shared.ports.Documents`` the received documents); the unit tests fakes."""

from __future__ import annotations

from typing import Protocol

from faxbox.shared.store import Account, Carrier, Faxbox


class NumberDirectory(Protocol):
    async def faxbox_for_number(self, number: str) -> tuple[Faxbox, Account] | None: ...


class CarrierSource(Protocol):
    async def list_carriers(self, *, flag: str | None = None) -> list[Carrier]: ...
