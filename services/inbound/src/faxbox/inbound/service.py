"""Wiring of the inbound receiver: settings, the SIP listener, store, outbox and bus."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.settings import SipSettings, start_user_agent
from faxbox.inbound import metrics
from faxbox.inbound.edge import Admitted, CarrierEdge
from faxbox.inbound.handlers import Deps, handle_call, refuse_for_outage, store_pending
from faxbox.inbound.registrations import Registrations
from faxbox.shared import runner
from faxbox.shared.outbox import DecisionStore, Outbox
from faxbox.shared.policy import is_infrastructure
from faxbox.shared.runner import Runtime
from faxbox.shared.secretbox import SecretSettings
from faxbox.shared.settings import ServiceSettings
from faxbox.shared.store.gridfs_documents import GridFsDocuments
from faxbox.shared.store.registrations import COLLECTION as REGISTRATIONS
from faxbox.shared.store.registrations import SipRegistrations
from faxbox.shared.wiring import Infrastructure, infrastructure, outbox, overridden, prepare_spool

log = logging.getLogger(__name__)

SERVICE = "inbound"


def _default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(ServiceSettings, SecretSettings):
    service_prefix: ClassVar[str] = "inbound_"

    # FAXBOX_INBOUND_SIP__ADVERTISED_ADDRESS ... (nested SipSettings)
    model_config = SettingsConfigDict(env_nested_delimiter="__")  # merged with the parent's

    inbound_sip_host: str = "127.0.0.1"
    inbound_sip_port: int = Field(default=5080, ge=0, le=65535, description="0: any free port.")
    inbound_line_pace: float = Field(
        default=1.0, ge=0, description="Media clock: 1 real time, N times faster (tests)."
    )
    inbound_max_calls: int = Field(default=100, ge=1, description="Concurrent calls; more get 486.")
    inbound_max_call_s: float = Field(default=1800.0, gt=0, description="In call time.")
    inbound_accept_t38: bool = True
    inbound_media_silence_s: float = Field(
        default=60.0, gt=0, description="Hang up when no media arrived for this long (call time)."
    )
    inbound_spool_dir: Path | None = None
    inbound_invites_per_s: float = Field(
        default=20.0, gt=0, description="INVITEs a second from one address; more get 503."
    )
    inbound_invite_burst: int = Field(
        default=40, ge=1, description="INVITEs one address may send at once before the rate."
    )
    inbound_carriers_refresh_s: float = Field(
        default=5.0, gt=0, description="How often the carriers' allowed addresses are re-read."
    )
    inbound_sip: SipSettings = SipSettings()
    inbound_registration_reload_s: float = Field(
        default=60.0, gt=0, description="How often the carriers to register with are re-read."
    )
    inbound_instance: str = Field(
        default_factory=_default_instance, description="This replica's name in the dashboard."
    )
    inbound_outage_retry_after_s: int = Field(
        default=30,
        ge=1,
        description="Retry-After of the 503 a call gets while the database is unavailable.",
    )
    inbound_pending_retry_s: float = Field(
        default=2.0,
        gt=0,
        description=(
            "How often faxes kept on disk during a database outage are offered to it again "
            "(doubling while it stays down, up to FAXBOX_INFRASTRUCTURE_BACKOFF_MAX_S)."
        ),
    )


def build_deps(
    infra: Infrastructure, settings: Settings, *, decisions: DecisionStore, **overrides: Any
) -> Deps:
    """The handlers' dependencies, real; ``overrides`` replaces any of them by name."""
    deps = Deps(
        directory=infra.store,
        documents=GridFsDocuments(infra.store.documents),
        decisions=decisions,
        calls=asyncio.Semaphore(settings.inbound_max_calls),
        max_call_s=settings.inbound_max_call_s,  # call time, as the fax line counts
        media_silence_s=settings.inbound_media_silence_s,
        spool_dir=settings.inbound_spool_dir,
        outage_retry_after_s=settings.inbound_outage_retry_after_s,
        crash_at=settings.test_crash_at,
    )
    return overridden(deps, overrides)


@contextlib.asynccontextmanager
async def service(runtime: Runtime, settings: Settings) -> AsyncIterator[None]:
    prepare_spool(settings.inbound_spool_dir)
    async with infrastructure(settings, runtime) as infra, outbox(infra, settings, SERVICE) as box:
        deps = build_deps(infra, settings, decisions=box.store)
        ua = await start_user_agent(
            settings.inbound_sip_host,
            settings.inbound_sip_port,
            settings.inbound_sip,
            pace=settings.inbound_line_pace,
            user="faxbox-inbound",
            accept_t38=settings.inbound_accept_t38 and settings.inbound_line_pace > 0,
        )
        runtime.add_check("sip", lambda: ua.is_open)
        registrations = Registrations(
            ua,
            infra.store,
            SipRegistrations(infra.store.db[REGISTRATIONS]),
            settings.inbound_instance,
            secrets=settings.box(),
            reload_s=settings.inbound_registration_reload_s,
        )
        in_flight: set[asyncio.Task[None]] = set()

        edge = CarrierEdge(
            infra.store,
            settings.box(),
            ua.resolver,
            invites_per_s=settings.inbound_invites_per_s,
            burst=settings.inbound_invite_burst,
            refresh_s=settings.inbound_carriers_refresh_s,
            load=runtime.loop_lag,
            overload_retry_after_s=settings.overload_retry_after_s,
            overload_bound_ms=settings.loop_lag_bound_at(settings.inbound_line_pace),
        )
        await edge.known()  # says at once when no carrier is configured

        async def on_invite(incoming: IncomingCall) -> None:
            task = asyncio.current_task()
            if task is not None:
                in_flight.add(task)
            try:
                try:
                    admit = await admitted(incoming, edge)
                except Exception as exc:  # the carriers could not be read
                    if not is_infrastructure(exc) or incoming.decided:
                        raise
                    await refuse_for_outage(incoming, deps.outage_retry_after_s, exc)
                    return
                if admit:
                    recorded = await handle_call(incoming, deps)
                    if recorded is not None:
                        await box.publish_soon(recorded)
            finally:
                if task is not None:
                    in_flight.discard(task)

        # Before the first call: what a dead process of this replica was receiving.
        await asyncio.to_thread(deps.receiving.recover, deps.pending, deps.clock())
        ua.listen(on_invite)
        log.info("inbound receiver listening for SIP on %s:%d", ua.host, ua.port)
        await registrations.start()
        keeper = asyncio.create_task(
            store_pending_forever(
                deps,
                box,
                settings.inbound_pending_retry_s,
                settings.infrastructure_backoff_max_s,
            )
        )
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            ua.listen(_refuse)  # no new calls while the ones in progress finish
            await registrations.stop()  # and none routed to us any more
            pending = {t for t in in_flight if not t.done()}
            if pending:
                await asyncio.wait(pending, timeout=settings.shutdown_grace_s)
            await ua.close()


async def store_pending_forever(deps: Deps, box: Outbox, every_s: float, cap_s: float) -> None:
    """Faxes kept on disk during a database outage, stored and announced once it answers."""
    delay = every_s
    while True:
        try:
            for recorded in await store_pending(deps):
                await box.publish_soon(recorded)
            delay = every_s
        except Exception as exc:
            if not is_infrastructure(exc):
                log.exception("a fax kept on disk could not be stored; trying again")
            else:
                log.warning("faxes kept on disk wait for the database: %s", type(exc).__name__)
            delay = min(delay * 2, cap_s)
        metrics.PENDING.set(await asyncio.to_thread(deps.pending.count))
        await asyncio.sleep(delay)


async def admitted(incoming: IncomingCall, edge: CarrierEdge) -> bool:
    """Whether the INVITE passed the edge (see ``edge``); if not, it is refused here."""
    verdict = await edge.judge(incoming.request, incoming.hop.host)
    if isinstance(verdict, Admitted):
        return True
    metrics.INVITES_REFUSED.labels(verdict.why).inc()
    metrics.CALLS_REFUSED.labels(str(verdict.status)).inc()
    if verdict.why != "challenge":
        log.warning(
            "INVITE from %s:%d to %s refused: %d %s (%s)",
            *incoming.hop.address,
            incoming.to_number,
            verdict.status,
            verdict.reason,
            verdict.why,
        )
    await incoming.reject(verdict.status, verdict.reason, verdict.headers)
    return False


async def _refuse(incoming: IncomingCall) -> None:
    await incoming.reject(503)


def main() -> None:
    """``python -m faxbox.inbound``: the settings from the environment, then run."""
    runner.main(SERVICE, Settings, service)
