"""Wiring of the webhooks service: settings, ports, the consumer, log retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, ClassVar

import httpx
from pydantic import Field, field_validator

from faxbox.shared import runner
from faxbox.shared.bus import Handler
from faxbox.shared.contracts import Message, WebhookDeliveryRequested
from faxbox.shared.routing import subscriptions
from faxbox.shared.runner import Runtime
from faxbox.shared.secretbox import SecretSettings
from faxbox.shared.settings import ServiceSettings, WebhookTargetSettings
from faxbox.shared.store import Store
from faxbox.shared.store.monthly import month_key
from faxbox.shared.store.signing_keys import SigningKeys
from faxbox.shared.store.webhooks import LOG_PREFIX, WebhookStore
from faxbox.shared.urlguard import parse_networks
from faxbox.shared.wiring import Infrastructure, infrastructure, outbox, overridden
from faxbox.webhooks.adapters import (
    SLOTS_COLLECTION,
    HttpSender,
    KeySigner,
    LeaseSlots,
    StoreDeliveryLog,
    StoreWebhooks,
)
from faxbox.webhooks.handlers import RETRY_SCHEDULE_S, Deps, deliver, on_fax_event

log = logging.getLogger(__name__)

SERVICE = "webhooks"
_SIGNING = "signing webhook deliveries"


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Settings(ServiceSettings, SecretSettings, WebhookTargetSettings):
    service_prefix: ClassVar[str] = "webhooks_"

    prefetch: int = Field(default=32, ge=1, le=1000)
    webhooks_retry_schedule_s: tuple[int, ...] = Field(
        default=RETRY_SCHEDULE_S,
        description="Waits before each retry after the first attempt (JSON list, seconds).",
    )
    webhooks_http_timeout_s: float = Field(default=10.0, gt=0, description="Whole request.")
    webhooks_http_connect_timeout_s: float = Field(default=5.0, gt=0)
    webhooks_busy_retry_s: int = Field(
        default=2, ge=1, description="Wait when every request slot of a URL is taken."
    )
    webhooks_log_months: int = Field(
        default=3, ge=1, description="Months of delivery logs kept (this one included)."
    )
    webhooks_worker_id: str = Field(default_factory=_default_worker_id)

    @field_validator("webhooks_retry_schedule_s")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(delay < 1 for delay in value):
            raise ValueError("every retry delay is at least one second")
        return value


def build_deps(
    infra: Infrastructure, settings: Settings, *, http: httpx.AsyncClient, **overrides: Any
) -> Deps:
    """The handlers' dependencies, real; ``overrides`` replaces any of them by name."""
    store = infra.store
    webhooks = WebhookStore(store.db)
    lease = timedelta(seconds=2 * settings.webhooks_http_timeout_s + 5)
    deps = Deps(
        webhooks=StoreWebhooks(webhooks),
        log=StoreDeliveryLog(webhooks),
        signer=KeySigner(SigningKeys(store.db, settings.required_box(_SIGNING))),
        sender=HttpSender(http, parse_networks(settings.webhooks_allowed_networks)),
        slots=LeaseSlots(store.db[SLOTS_COLLECTION], lease),
        worker_id=settings.webhooks_worker_id,
        schedule_s=settings.webhooks_retry_schedule_s,
        busy_retry_s=settings.webhooks_busy_retry_s,
    )
    return overridden(deps, overrides)


async def _delivered(command: WebhookDeliveryRequested, deps: Deps) -> None:
    outcome = await deliver(command, deps)
    log.info("delivery %s: %s", command.event_id, outcome.value)


async def drop_old_logs(store: Store, keep_months: int) -> list[str]:
    """Drop delivery logs of months before the last ``keep_months``; their names."""
    names = await store.db.list_collection_names(filter={"name": {"$regex": f"^{LOG_PREFIX}"}})
    months: list[str] = []
    month = month_key(store_now())
    for _ in range(keep_months):
        months.append(month)
        year, number = int(month[:4]), int(month[4:])
        month = f"{year - 1}12" if number == 1 else f"{year}{number - 1:02d}"
    oldest = months[-1]
    dropped = [n for n in names if n.rsplit("_", 1)[-1] < oldest]
    for name in dropped:
        await store.db.drop_collection(name)
    return dropped


def store_now() -> datetime:
    return datetime.now(UTC)


async def _retention(store: Store, keep_months: int) -> None:
    while True:
        try:
            dropped = await drop_old_logs(store, keep_months)
            if dropped:
                log.info("dropped %d old webhook delivery log(s)", len(dropped))
        except Exception:
            log.exception("dropping old delivery logs failed; trying again in an hour")
        await asyncio.sleep(3600)


@contextlib.asynccontextmanager
async def service(runtime: Runtime, settings: Settings) -> AsyncIterator[None]:
    settings.required_box(_SIGNING)  # refuse to start without the key
    timeout = httpx.Timeout(
        settings.webhooks_http_timeout_s, connect=settings.webhooks_http_connect_timeout_s
    )
    async with (
        infrastructure(settings, runtime) as infra,
        outbox(infra, settings, SERVICE) as box,
        httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as http,
    ):
        store = WebhookStore(infra.store.db)
        await store.ensure_indexes()
        deps = build_deps(infra, settings, http=http)
        told = box.consuming(partial(on_fax_event, deps=deps))
        handlers: dict[type[Message], Handler] = {
            contract: told
            for contract in subscriptions(SERVICE)
            if contract is not WebhookDeliveryRequested
        }
        handlers[WebhookDeliveryRequested] = partial(_delivered, deps=deps)
        retention = asyncio.create_task(_retention(infra.store, settings.webhooks_log_months))
        try:
            async with infra.bus.consumer(SERVICE, handlers).running(settings.shutdown_grace_s):
                yield
        finally:
            retention.cancel()


def main() -> None:
    """``python -m faxbox.webhooks``: the settings from the environment, then run."""
    runner.main(SERVICE, Settings, service)
