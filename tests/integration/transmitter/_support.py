"""Helpers shared by the transmitter and inbound integration tests.

``EventLog`` reads every fax event the services publish from the history service's
queue (bound to all of them) in the test's own topology prefix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from faxbox.shared.bus import Bus, decode
from faxbox.shared.contracts import (
    DocumentRef,
    FaxSettings,
    Message,
    OutboundFaxRequested,
    RetryPolicy,
    month_of,
)
from faxbox.shared.store import Account, Carrier, Faxbox, Store, User, new_id

M = TypeVar("M", bound=Message)


class EventLog:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.events: list[Message] = []
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def start(self) -> None:
        await self.bus.declare_service("history")
        channel = await self.bus.connection.channel()
        self._queue = await channel.get_queue(self.bus.topology.queue("history"))
        self._tag = await self._queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        self.events.append(decode(incoming))

    def of(self, kind: type[M], fax_id: str | None = None) -> list[M]:
        return [
            e for e in self.events if isinstance(e, kind) and (fax_id is None or e.fax_id == fax_id)
        ]

    async def wait_for(
        self, kind: type[M], fax_id: str | None = None, *, count: int = 1, within_s: float = 60
    ) -> list[M]:
        await eventually(lambda: len(self.of(kind, fax_id)) >= count, within_s, f"{kind.__name__}")
        return self.of(kind, fax_id)


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], within_s: float, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not met within {within_s}s")


async def seed_faxbox(store: Store, realm: str, **faxbox: object) -> Faxbox:
    account = await store.create_account(Account(name=f"Acme {realm}", realm=realm))
    user = await store.create_user(User(account_id=account.id, email=f"owner@{realm}"))
    return await store.create_faxbox(
        Faxbox.model_validate({"account_id": account.id, "owner_user_id": user.id, **faxbox})
    )


async def give_number(store: Store, faxbox: Faxbox, number: str) -> None:
    """The number into the faxbox's account's inventory, then to the faxbox."""
    await store.add_account_number(faxbox.account_id, number)
    await store.assign_number(faxbox.id, number)


async def loopback_carrier(store: Store, name: str = "loopback", **fields: object) -> Carrier:
    """A carrier whose calls come from this machine (the tests' callers and pstn-sim)."""
    existing = {c.name: c for c in await store.list_carriers()}
    if name in existing:
        return existing[name]
    return await store.add_carrier(
        Carrier.model_validate({"name": name, "sip_host": "127.0.0.1", **fields})
    )


async def fax_request(
    store: Store,
    faxbox: Faxbox,
    tiff: Path,
    destination: str,
    *,
    pages: int,
    attempts: int = 3,
    delays_s: tuple[int, ...] = (1, 2),
    route_flags: tuple[str, ...] = (),
) -> OutboundFaxRequested:
    month = month_of(datetime.now(UTC))
    data = await asyncio.to_thread(tiff.read_bytes)
    ref: DocumentRef = await store.documents.put(
        faxbox.account_id, month, data, filename="fax.tif", content_type="image/tiff"
    )
    return OutboundFaxRequested(
        fax_id=new_id("fax"),
        account_id=faxbox.account_id,
        month=month,
        user_id=faxbox.owner_user_id,
        faxbox_id=faxbox.id,
        sender_email=f"owner@{faxbox.account_id}.test",
        destination=destination,
        settings=FaxSettings(caller_id="+12125550199", identity="ACME FAX", header_name="Acme"),
        retry_policy=RetryPolicy(attempts=attempts, delays_s=delays_s),
        original=ref,
        fax_tiff=ref,
        pages=pages,
        route_flags=route_flags,
    )
