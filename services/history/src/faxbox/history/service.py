"""Wiring of the history-writer: settings, the consumer, the batch writer, retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import ClassVar

from pydantic import Field

from faxbox.history.adapters import BatchingRecorder, MongoHistoryWriter
from faxbox.history.handlers import record_event
from faxbox.history.single_writer import (
    COLLECTION,
    LEASE_NAME,
    SingleWriter,
    Turn,
    always_writing,
    needs_single_writer,
    single_writer,
)
from faxbox.shared import runner
from faxbox.shared.bus import Consumer, Handler
from faxbox.shared.contracts import Message
from faxbox.shared.routing import subscriptions
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import ServiceSettings
from faxbox.shared.store import Store, apply_retention
from faxbox.shared.store.held import HeldLease
from faxbox.shared.wiring import Infrastructure, infrastructure

log = logging.getLogger(__name__)

SERVICE = "history"


class Settings(ServiceSettings):
    service_prefix: ClassVar[str] = "history_"

    # Batching only pays if many deliveries are in hand at once. Large batches merge
    # more events of one fax and write each day key document once per batch: on FerretDB
    # (10,000 shuffled events written directly) 1,000 per batch gave 1,430 events/s
    # against 930 for 200. The cost: an ack waits for its whole batch (< 1 s).
    prefetch: int = Field(default=1000, ge=1, le=1000)
    history_batch_max: int = Field(default=1000, ge=1, description="Changes per bulk write.")
    # Two lanes let FerretDB use both cores of the 2-core benchmark machine (+12 %
    # events/s; 3 and 4 measured no better). At most 3: each lane, and the day keys'
    # stream beside them, holds up to ~21 of FerretDB's 100 connections per database.
    history_write_lanes: int = Field(
        default=2, ge=1, le=3, description="Concurrent streams of document upserts per batch."
    )
    history_batch_delay_ms: float = Field(
        default=20.0, ge=0, description="Longest wait for a batch to fill."
    )
    history_retention_interval_s: float = Field(
        default=3600.0, ge=0, description="How often months_to_keep is applied; 0 = never."
    )
    history_single_writer: SingleWriter = Field(
        default="auto",
        description=(
            "One replica writes at a time (the others stand by): 'auto' on FerretDB, "
            "whose updates are not atomic; 'on'; 'off'."
        ),
    )
    history_lease_ttl_s: float = Field(
        default=15.0, gt=0, description="How long a dead writer's turn lasts before a standby's."
    )


async def retention_loop(store: Store, interval_s: float) -> None:
    while True:
        try:
            dropped = await apply_retention(store)
            if dropped:
                log.info(
                    "retention dropped %d account-month(s)",
                    len(dropped),
                    extra={"dropped": [f"{a}/{m}" for a, m in dropped]},
                )
        except Exception:
            log.exception("retention run failed; trying again next interval")
        await asyncio.sleep(interval_s)


def build_deps(infra: Infrastructure, settings: Settings) -> BatchingRecorder:
    """What the handler records changes with: batches written to the month collections."""
    return BatchingRecorder(
        MongoHistoryWriter(infra.store.history, lanes=settings.history_write_lanes),
        max_batch=settings.history_batch_max,
        max_delay_s=settings.history_batch_delay_ms / 1000,
    )


@contextlib.asynccontextmanager
async def service(runtime: Runtime, settings: Settings) -> AsyncIterator[None]:
    async with infrastructure(settings, runtime) as infra:
        recorder = build_deps(infra, settings)
        handlers: dict[type[Message], Handler] = {
            contract: partial(record_event, recorder=recorder)
            for contract in subscriptions(SERVICE)
        }
        consumers: list[Consumer] = []

        async def start() -> None:
            consumers.append(infra.bus.consumer(SERVICE, handlers))
            await consumers[-1].start()

        async def stop(grace_s: float) -> None:
            await consumers.pop().stop(grace_s)
            # What is still unwritten goes back with its unacked message: to the next
            # writer, never written by two at once.
            await recorder.close()

        # The queue exists before anyone consumes it: events wait there for the writer.
        await infra.bus.declare_service(SERVICE)
        turn: contextlib.AbstractAsyncContextManager[None]
        if await needs_single_writer(infra.store, settings.history_single_writer):
            lease = HeldLease(
                infra.store.db[COLLECTION],
                LEASE_NAME,
                f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
                settings.history_lease_ttl_s,
            )
            # A short grace: the lease may be about to pass to another replica.
            grace_s = min(settings.shutdown_grace_s, lease.ttl_s / 3)
            turn = single_writer(lease, Turn(start, partial(stop, grace_s)))
        else:
            turn = always_writing(start, partial(stop, settings.shutdown_grace_s))
        retention: asyncio.Task[None] | None = None
        if settings.history_retention_interval_s > 0:
            retention = asyncio.create_task(
                retention_loop(infra.store, settings.history_retention_interval_s)
            )
        try:
            async with turn:
                yield
        finally:
            if retention is not None:
                retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retention
            await recorder.close()


def main() -> None:
    """``python -m faxbox.history``: the settings from the environment, then run."""
    runner.main(SERVICE, Settings, service)
