"""Wiring of the mail-poller: settings, adapters, one watcher per configured mailbox."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any, ClassVar, Final

from pydantic import Field

from faxbox.mail_poller.adapters import BusDeadLetters, GridFsRawStore, StoreRealms
from faxbox.mail_poller.auth import TokenSource
from faxbox.mail_poller.config import MailboxConfig
from faxbox.mail_poller.handlers import DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_MAIL_BYTES, IntakeDeps
from faxbox.mail_poller.imap import ImapSession
from faxbox.mail_poller.lease import MailboxLease
from faxbox.mail_poller.ledger import MongoLedger
from faxbox.mail_poller.ports import Ledger
from faxbox.mail_poller.push import ROUTE, PushHub
from faxbox.mail_poller.watcher import MailboxWatcher, Timing
from faxbox.shared import crashpoints, runner
from faxbox.shared.outbox import Outbox
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import ServiceSettings
from faxbox.shared.wiring import Infrastructure, infrastructure, outbox, overridden

log = logging.getLogger(__name__)

SERVICE: Final = "mail-poller"


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Settings(ServiceSettings):
    service_prefix: ClassVar[str] = "mail_poller_"

    mail_poller_mailboxes: tuple[MailboxConfig, ...] = Field(
        default=(), description="FAXBOX_MAIL_POLLER_MAILBOXES: a JSON list of mailbox objects."
    )
    mail_poller_lease_ttl_s: float = Field(default=10.0, gt=0)
    mail_poller_lease_renew_s: float = Field(default=3.0, gt=0)
    mail_poller_lease_retry_s: float = Field(default=1.0, gt=0)
    mail_poller_reconnect_base_s: float = Field(default=0.5, gt=0)
    mail_poller_reconnect_cap_s: float = Field(default=30.0, gt=0)
    mail_poller_max_mail_bytes: int = Field(
        default=DEFAULT_MAX_MAIL_BYTES,
        ge=1024,
        description="A mail over this (RFC822.SIZE) is never fetched whole; its headers "
        "are taken and it is moved to the oversize folder.",
    )
    mail_poller_max_header_bytes: int = Field(default=DEFAULT_MAX_HEADER_BYTES, ge=1024)
    mail_poller_fetch_attempts: int = Field(
        default=5,
        ge=1,
        description="Reads of one message before it is set aside to the failed folder and "
        "dead-lettered.",
    )
    mail_poller_fetch_retry_base_s: float = Field(default=1.0, gt=0)
    mail_poller_fetch_retry_cap_s: float = Field(default=60.0, gt=0)
    mail_poller_replica_id: str = Field(default_factory=_default_replica_id)
    mail_poller_imap_push_host: str | None = Field(
        default=None,
        description=(
            "FAXBOX_MAIL_POLLER_IMAP_PUSH_HOST: the address the IMAP server reaches this process's "
            "HTTP port at. Set, each session registers a push URL on its folder (needs "
            "METADATA and deploy/dovecot/faxbox-push.lua in Dovecot) and wakes on its "
            "POST instead of IDLE's half-second delay; unset, IDLE alone."
        ),
    )


def _crash_after_publish() -> None:
    crashpoints.crash(SERVICE, "after_publish")


_TIMING_FIELDS: Final = {f.name for f in dataclasses.fields(Timing)}


def timing_of(settings: Settings) -> Timing:
    """Every field of Timing is a setting of the same name under the service's prefix."""
    return Timing(
        **{name: getattr(settings, settings.service_prefix + name) for name in _TIMING_FIELDS}
    )


def _noop() -> None:
    return None


def build_deps(
    infra: Infrastructure, settings: Settings, *, ledger: Ledger, outbox: Outbox, **overrides: Any
) -> IntakeDeps:
    """The handlers' dependencies, real; ``overrides`` replaces any of them by name."""
    deps = IntakeDeps(
        ledger=ledger,
        raw_store=GridFsRawStore(infra.store.documents),
        outbox=outbox,
        is_realm=StoreRealms(infra.store).is_realm,
        max_mail_bytes=settings.mail_poller_max_mail_bytes,
        max_header_bytes=settings.mail_poller_max_header_bytes,
        after_publish=(
            _crash_after_publish
            if crashpoints.armed(settings.test_crash_at, SERVICE, "after_publish")
            else _noop
        ),
    )
    return overridden(deps, overrides)


@contextlib.asynccontextmanager
async def service(runtime: Runtime, settings: Settings) -> AsyncIterator[None]:
    if not settings.mail_poller_mailboxes:
        raise ValueError("no mailbox configured: set FAXBOX_MAIL_POLLER_MAILBOXES to a JSON list")
    names = [m.name for m in settings.mail_poller_mailboxes]
    if len(set(names)) != len(names):
        raise ValueError(f"mailbox names must be unique: {names}")
    async with infrastructure(settings, runtime) as infra, outbox(infra, settings, SERVICE) as box:
        ledger = MongoLedger(infra.store.db)
        await ledger.ensure_indexes()
        deps = build_deps(infra, settings, ledger=ledger, outbox=box)
        timing = timing_of(settings)
        dead_letters = BusDeadLetters(infra.bus, SERVICE)
        hub: PushHub | None = None
        if settings.mail_poller_imap_push_host:
            host = settings.mail_poller_imap_push_host
            hub = PushHub(f"http://{f'[{host}]' if ':' in host else host}:{runtime.http_port}")
            runtime.add_route(ROUTE, hub.handle)
        watchers: list[MailboxWatcher] = []
        for config in settings.mail_poller_mailboxes:
            tokens = TokenSource(config) if config.auth == "xoauth2" else None
            push = hub.target(config.name) if hub is not None and config.push else None
            watcher = MailboxWatcher(
                config,
                MailboxLease(
                    infra.store.db,
                    config.name,
                    settings.mail_poller_replica_id,
                    settings.mail_poller_lease_ttl_s,
                ),
                deps,
                partial(ImapSession, config, tokens, push),
                dead_letters,
                timing,
            )
            runtime.add_check(f"imap {config.name}", watcher.healthy)
            watchers.append(watcher)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stop), name=f"watch {w.name}") for w in watchers]
        log.info("watching", extra={"mailboxes": names, "replica": settings.mail_poller_replica_id})
        try:
            yield
        finally:
            stop.set()
            _, pending = await asyncio.wait(tasks, timeout=settings.shutdown_grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    """``python -m faxbox.mail_poller``: the settings from the environment, then run."""
    runner.main(SERVICE, Settings, service)
