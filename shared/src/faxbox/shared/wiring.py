"""The connections every worker service opens, with their health checks.

A service's wiring module does::

    @contextlib.asynccontextmanager
    async def service(runtime: Runtime, settings: Settings) -> AsyncIterator[None]:
        async with infrastructure(settings, runtime) as infra:
            consumer = infra.bus.consumer("notifier", {FaxSent: partial(on_sent, deps)})
            await consumer.start()
            try:
                yield
            finally:
                await consumer.stop(settings.shutdown_grace_s)

    def main() -> None:
        runner.main("notifier", Settings, service)

A service that decides messages wraps its handlers with the outbox of
:func:`outbox` (``box.consuming(handler)``), which also sweeps for what stayed owed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from faxbox.shared import startup
from faxbox.shared.bus import Bus
from faxbox.shared.outbox import Outbox
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import ServiceSettings
from faxbox.shared.store import Store
from faxbox.shared.store.decisions import MongoDecisionStore

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    Deps = TypeVar("Deps", bound=DataclassInstance)
else:
    Deps = TypeVar("Deps")


@dataclass(frozen=True, slots=True)
class Infrastructure:
    bus: Bus
    store: Store


@contextlib.asynccontextmanager
async def infrastructure(
    settings: ServiceSettings, runtime: Runtime
) -> AsyncIterator[Infrastructure]:
    """Connect to the database (indexes ensured) and the broker; close both on exit.

    Either being down at start-up is waited out (``faxbox.shared.startup``): readiness
    says which one is missing meanwhile.
    """
    runtime.add_check("database", _not_yet)
    runtime.add_check("broker", _not_yet)
    store = await startup.wait_for(
        "database",
        startup.without_credentials(settings.mongo_url),
        partial(_store, settings),
        timeout_s=settings.connect_timeout_s,
    )
    try:
        runtime.add_check("database", store.ping)
        bus = Bus(settings)
        await startup.wait_for(
            "broker",
            startup.without_credentials(settings.amqp_url),
            bus.connect,
            timeout_s=settings.connect_timeout_s,
        )
        try:
            runtime.add_check("broker", lambda: bus.is_connected)
            yield Infrastructure(bus=bus, store=store)
        finally:
            await bus.close()
    finally:
        await store.close()


def _not_yet() -> bool:
    return False


async def _store(settings: ServiceSettings) -> Store:
    store = await Store.connect(settings, timeout_s=startup.DATABASE_TRY_S)
    try:
        await store.ensure_indexes()
    except BaseException:
        await store.close()
        raise
    return store


@contextlib.asynccontextmanager
async def outbox(
    infra: Infrastructure, settings: ServiceSettings, name: str
) -> AsyncIterator[Outbox]:
    """The service's outbox on the database and the bus, swept while the block runs."""
    decisions = MongoDecisionStore(infra.store.db, name)
    await decisions.ensure_indexes()
    box = Outbox(decisions, infra.bus, name=name)
    sweeper = asyncio.create_task(
        box.sweep_forever(settings.outbox_sweep_interval_s, settings.outbox_grace_s)
    )
    try:
        yield box
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


def overridden(deps: Deps, overrides: dict[str, Any]) -> Deps:
    """A service's real dependencies with any of them replaced by name: how tests and
    ``build_deps(infra, settings, **overrides)`` swap one part and keep the rest."""
    return replace(deps, **overrides) if overrides else deps


def prepare_spool(spool_dir: Path | None) -> None:
    """A configured spool that does not exist yet (a fresh volume) is ours to make."""
    if spool_dir is not None:
        spool_dir.mkdir(parents=True, exist_ok=True)
