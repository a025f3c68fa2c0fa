"""Wiring of the validator: settings, ports on MongoDB, the renderer pool, the consumer."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from functools import partial
from typing import Any, ClassVar

from pydantic import Field

from faxbox.render import DEFAULT_MAX_LENGTH_MM, DEFAULT_TIMEOUT_S
from faxbox.shared import runner
from faxbox.shared.bus import Handler
from faxbox.shared.contracts import FaxSubmitted, MailReceived, Message
from faxbox.shared.outbox import DecisionStore
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import OwnershipSettings, ServiceSettings
from faxbox.shared.store.gridfs_documents import GridFsDocuments
from faxbox.shared.wiring import Infrastructure, infrastructure, outbox, overridden
from faxbox.validator.adapters import (
    MongoClaims,
    MongoDirectory,
    MongoPageCounters,
)
from faxbox.validator.decision import (
    DEFAULT_DAILY_PAGES_PER_ACCOUNT,
    DEFAULT_DAILY_PAGES_PER_USER,
    DEFAULT_MAX_ATTACHMENT_BYTES,
    DEFAULT_MAX_PAGES,
    Limits,
)
from faxbox.validator.handlers import Deps, on_mail_received
from faxbox.validator.mime import Caps
from faxbox.validator.ports import Renderer
from faxbox.validator.renderer import ProcessRenderer
from faxbox.validator.submitted import on_fax_submitted
from faxbox.validator.trust import warn_without_trusted_servers

SERVICE = "validator"
_CAPS = Caps()


class Settings(ServiceSettings, OwnershipSettings):
    service_prefix: ClassVar[str] = "validator_"

    # Each message in hand may hold a rendering worker; more than the cores just queues.
    prefetch: int = Field(default=4, ge=1, le=1000)
    validator_max_attachment_bytes: int = Field(default=DEFAULT_MAX_ATTACHMENT_BYTES, ge=1)
    validator_max_pages: int = Field(default=DEFAULT_MAX_PAGES, ge=1)
    validator_render_timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    validator_max_page_length_mm: float = Field(
        default=DEFAULT_MAX_LENGTH_MM,
        gt=0,
        description="Longest page faxed, once fitted to the 215 mm fax width; longer is refused.",
    )
    validator_render_memory_mb: int = Field(
        default=1024,
        ge=128,
        description="Address space a rendering worker may take; more is refused as too_complex.",
    )
    validator_render_concurrency: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1), ge=1
    )
    validator_max_header_bytes: int = Field(default=_CAPS.header_bytes, ge=1024)
    validator_max_parts: int = Field(default=_CAPS.parts, ge=2)
    validator_max_depth: int = Field(default=_CAPS.depth, ge=1)
    validator_max_addresses: int = Field(default=_CAPS.addresses, ge=1)
    validator_authserv_ids: tuple[str, ...] = Field(
        default=(),
        description=(
            "authserv-ids of our own MTAs; only the topmost Authentication-Results header "
            "of one of them is trusted (JSON list in FAXBOX_VALIDATOR_AUTHSERV_IDS, e.g. "
            '["mx.faxbox.example"]). Empty: no sender can be proven.'
        ),
    )
    validator_daily_pages_per_user: int = Field(
        default=DEFAULT_DAILY_PAGES_PER_USER,
        ge=0,
        description="Pages a user may fax a UTC day unless the user has its own cap; 0: no cap.",
    )
    validator_daily_pages_per_account: int = Field(
        default=DEFAULT_DAILY_PAGES_PER_ACCOUNT,
        ge=0,
        description="Pages an account may fax a UTC day unless it has its own cap; 0: no cap.",
    )

    def limits(self) -> Limits:
        return Limits(
            max_attachment_bytes=self.validator_max_attachment_bytes,
            max_pages=self.validator_max_pages,
            trusted_authserv_ids=frozenset(i.lower() for i in self.validator_authserv_ids),
            caps=Caps(
                header_bytes=self.validator_max_header_bytes,
                parts=self.validator_max_parts,
                depth=self.validator_max_depth,
                addresses=self.validator_max_addresses,
            ),
            daily_pages_per_user=self.validator_daily_pages_per_user,
            daily_pages_per_account=self.validator_daily_pages_per_account,
            caller_id_scope=self.caller_id_scope,
        )


def build_deps(
    infra: Infrastructure,
    settings: Settings,
    *,
    decisions: DecisionStore,
    renderer: Renderer | None = None,
    **overrides: Any,
) -> Deps:
    """The handlers' dependencies, real; ``overrides`` replaces any of them by name."""
    store = infra.store
    deps = Deps(
        directory=MongoDirectory(store),
        counters=MongoPageCounters(store),
        renderer=renderer
        or ProcessRenderer(
            settings.validator_render_timeout_s,
            settings.validator_render_concurrency,
            settings.validator_max_page_length_mm,
            settings.validator_render_memory_mb * 2**20,
        ),
        documents=GridFsDocuments(store.documents),
        decisions=decisions,
        limits=settings.limits(),
        claims=MongoClaims(store),
    )
    return overridden(deps, overrides)


@contextlib.asynccontextmanager
async def service(runtime: Runtime, settings: Settings) -> AsyncIterator[None]:
    async with infrastructure(settings, runtime) as infra, outbox(infra, settings, SERVICE) as box:
        await warn_without_trusted_servers(infra.store, settings.validator_authserv_ids)
        deps = build_deps(infra, settings, decisions=box.store)
        handlers: dict[type[Message], Handler] = {
            MailReceived: box.consuming(partial(on_mail_received, deps=deps)),
            FaxSubmitted: box.consuming(partial(on_fax_submitted, deps=deps)),
        }
        async with infra.bus.consumer(SERVICE, handlers).running(settings.shutdown_grace_s):
            yield


def main() -> None:
    """``python -m faxbox.validator``: the settings from the environment, then run."""
    runner.main(SERVICE, Settings, service)
