"""The transmitter's interfaces to the outside: the handler's ``Deps`` are these (and the
job ledger, ``jobs.JobLedger``), the service wires the real ones, the unit tests fakes.
The real ones: the store's carriers and cancellations, ``adapters.GridFsDocuments``,
``adapters.SipFaxLine``, ``adapters.MongoCarrierSlots``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from faxbox.shared.contracts import DocumentRef, OutboundFaxRequested
from faxbox.shared.store import Carrier
from faxbox.transmitter.carriers import Slot
from faxbox.transmitter.line import CallReport, Dial


class CarrierSource(Protocol):
    async def list_carriers(self, *, flag: str | None = None) -> list[Carrier]: ...


class DocumentSource(Protocol):
    async def fetch(self, ref: DocumentRef, path: Path) -> None:
        """Write the document to ``path``; ``NotFound`` if it is gone."""
        ...

    async def put_transmitted(
        self, message: OutboundFaxRequested, attempt: int, path: Path
    ) -> DocumentRef:
        """Keep the TIFF a call sent, in the fax's account-month bucket (once per
        attempt: a second call for the same attempt finds the first one's)."""
        ...


class CancellationSource(Protocol):
    async def requested_at(self, fax_id: str) -> datetime | None:
        """When the fax's sender asked to cancel it; None if they did not."""
        ...


class FaxLine(Protocol):
    async def transmit(self, dial: Dial) -> CallReport: ...


class CarrierSlots(Protocol):
    async def acquire(
        self, carriers: Sequence[Carrier], holder: str, now: datetime, lease_s: float
    ) -> Slot | None:
        """A free channel on the first carrier (in order) that has one; None if all busy."""
        ...

    async def renew(self, slot: Slot, until: datetime) -> bool: ...

    async def release(self, slot: Slot) -> None: ...
