"""Wiring of the notifier: settings, SMTP, the send claims, the outbox, the consumer."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from functools import partial
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from faxbox.notifier.adapters import StoreDirectory
from faxbox.notifier.claims import COLLECTION, MongoSendClaims
from faxbox.notifier.handlers import HANDLERS, Deps
from faxbox.notifier.mailer import SmtpMailer
from faxbox.shared import runner
from faxbox.shared.bus import Handler
from faxbox.shared.contracts import (
    Message,
)
from faxbox.shared.outbox import DecisionStore
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import ServiceSettings
from faxbox.shared.store.gridfs_documents import GridFsDocuments
from faxbox.shared.wiring import Infrastructure, infrastructure, outbox, overridden

SERVICE = "notifier"


class Settings(ServiceSettings):
    service_prefix: ClassVar[str] = "notifier_"

    notifier_smtp_host: str = "127.0.0.1"
    notifier_smtp_port: int = Field(default=587, ge=1, le=65535)
    notifier_smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="STARTTLS, implicit TLS (port 465), or plain (tests)."
    )
    notifier_smtp_username: str | None = None
    notifier_smtp_password: SecretStr | None = None
    notifier_smtp_timeout_s: float = Field(default=30.0, gt=0)
    notifier_smtp_ca_file: str | None = Field(
        default=None, description="CA bundle to verify the SMTP server with (default: system)."
    )
    notifier_mail_from: str = "Faxbox <fax@faxbox.test>"
    notifier_message_id_domain: str = "faxbox.test"
    notifier_lease_s: float = Field(
        default=120.0,
        gt=0,
        description="How long a claimed mail stays with its worker before another may send it.",
    )


def build_deps(
    infra: Infrastructure, settings: Settings, *, decisions: DecisionStore, **overrides: Any
) -> Deps:
    """The handlers' dependencies, real; ``overrides`` replaces any of them by name."""
    deps = Deps(
        directory=StoreDirectory(infra.store),
        documents=GridFsDocuments(infra.store.documents),
        claims=MongoSendClaims(infra.store.db[COLLECTION], settings.notifier_lease_s),
        decisions=decisions,
        mailer=SmtpMailer(
            host=settings.notifier_smtp_host,
            port=settings.notifier_smtp_port,
            security=settings.notifier_smtp_security,
            username=settings.notifier_smtp_username,
            password=(
                settings.notifier_smtp_password.get_secret_value()
                if settings.notifier_smtp_password
                else None
            ),
            timeout_s=settings.notifier_smtp_timeout_s,
            tls_context=(
                ssl.create_default_context(cafile=settings.notifier_smtp_ca_file)
                if settings.notifier_smtp_ca_file
                else None
            ),
        ),
        sender=settings.notifier_mail_from,
        message_id_domain=settings.notifier_message_id_domain,
    )
    return overridden(deps, overrides)


@contextlib.asynccontextmanager
async def service(runtime: Runtime, settings: Settings) -> AsyncIterator[None]:
    async with infrastructure(settings, runtime) as infra, outbox(infra, settings, SERVICE) as box:
        deps = build_deps(infra, settings, decisions=box.store)
        handlers: dict[type[Message], Handler] = {
            kind: box.consuming(partial(handler, deps=deps)) for kind, handler in HANDLERS.items()
        }
        async with infra.bus.consumer(SERVICE, handlers).running(settings.shutdown_grace_s):
            yield


def main() -> None:
    """``python -m faxbox.notifier``: the settings from the environment, then run."""
    runner.main(SERVICE, Settings, service)
