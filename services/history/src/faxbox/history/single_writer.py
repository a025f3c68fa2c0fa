"""One history-writer at a time where the database needs it (FerretDB v1).

Every event is an upsert of its fax's document. FerretDB v1 runs an update as a read
and a write by ``_id`` with nothing between them, so two replicas upserting one fax at
once lose one update (a timeline entry, a counter). MongoDB applies each update
atomically, and there any number of replicas write side by side.

So with ``FAXBOX_HISTORY_SINGLE_WRITER=auto`` (the default) a replica on FerretDB
consumes only while it holds the ``history`` writer lease (``history_leases``); the
others stand by, renewing their claim every third of the TTL, and one takes over within
a TTL of the holder's death or at once when it stops (it releases). The holder stops
consuming as soon as its hold is no longer sure, before anyone else can take it, and
what it had in hand goes back to the queue for its successor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, Literal

from faxbox.shared.store import Store
from faxbox.shared.store.held import HeldLease

log = logging.getLogger(__name__)

COLLECTION: Final = "history_leases"
LEASE_NAME: Final = "writer"

SingleWriter = Literal["auto", "on", "off"]


async def needs_single_writer(store: Store, setting: SingleWriter) -> bool:
    if setting != "auto":
        return setting == "on"
    info = await store.db.client.admin.command("buildInfo")
    return "ferretdbVersion" in info


class Turn:
    """What a replica does while it holds the writer lease: consume, then stop."""

    def __init__(
        self, start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
    ) -> None:
        self._start = start
        self._stop = stop
        self.writing = False

    async def begin(self) -> None:
        if not self.writing:
            await self._start()
            self.writing = True
            log.info("history: this replica holds the writer lease; consuming")

    async def end(self, why: str) -> None:
        if self.writing:
            self.writing = False
            await self._stop()
            log.warning("history: %s; stopped consuming", why)


async def keep_turn(lease: HeldLease, turn: Turn) -> None:
    """Consume while the lease is held; stand by (and try again) while it is not."""
    every = lease.ttl_s / 3
    while True:
        try:
            held = await lease.try_acquire()
        except Exception as exc:  # an outage: no renewal means no hold
            log.warning("history: writer lease not renewed: %s", exc)
            held = lease.held
        if held:
            await turn.begin()
        else:
            await turn.end("the writer lease is held by another replica or not sure")
        # Sleep in short steps so a hold that runs out is noticed before it expires.
        deadline = asyncio.get_running_loop().time() + every
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(min(0.5, every))
            if turn.writing and not lease.held:
                await turn.end("the writer lease ran out before it was renewed")


@contextlib.asynccontextmanager
async def single_writer(lease: HeldLease, turn: Turn) -> AsyncIterator[None]:
    """Hold the writer's turn for the length of the block; release it on the way out."""
    task = asyncio.create_task(keep_turn(lease, turn))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await turn.end("stopping")
        with contextlib.suppress(Exception):
            await lease.release()


@contextlib.asynccontextmanager
async def always_writing(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> AsyncIterator[None]:
    """Every replica writes (MongoDB): consume for the length of the block."""
    await start()
    try:
        yield
    finally:
        await stop()
