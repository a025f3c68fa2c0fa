"""Wiring of the transmitter: settings, the SIP user agent, the ledger, the outbox, the consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from faxbox.fax.sip.settings import SipSettings, start_user_agent
from faxbox.shared import crashpoints, runner
from faxbox.shared.contracts import (
    FaxCancelRequested,
    FaxSent,
    Message,
    OutboundFaxRequested,
)
from faxbox.shared.outbox import Outbox
from faxbox.shared.ports import Publisher
from faxbox.shared.runner import Runtime
from faxbox.shared.secretbox import SecretSettings
from faxbox.shared.settings import ServiceSettings
from faxbox.shared.store.cancellations import Cancellations
from faxbox.shared.wiring import Infrastructure, infrastructure, outbox, overridden, prepare_spool
from faxbox.transmitter import carriers, jobs
from faxbox.transmitter.adapters import GridFsDocuments, MongoCarrierSlots, SipFaxLine
from faxbox.transmitter.cancelling import handle_cancel
from faxbox.transmitter.handlers import Deps, handle_outbound
from faxbox.transmitter.jobs import JobLedger
from faxbox.transmitter.ports import FaxLine

log = logging.getLogger(__name__)

SERVICE = "transmitter"
# Exit status of the crash test hook, so a test can tell it from a real crash.
TEST_CRASH_EXIT_CODE = crashpoints.EXIT_STATUS[f"{SERVICE}.before_ack"]


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Settings(ServiceSettings, SecretSettings):
    service_prefix: ClassVar[str] = "transmitter_"

    # FAXBOX_TRANSMITTER_SIP__ADVERTISED_ADDRESS ... (nested SipSettings)
    model_config = SettingsConfigDict(env_nested_delimiter="__")  # merged with the parent's

    # Back-pressure: the broker hands us at most this many requests at a time; keep it a
    # little above max_calls so a freed channel finds the next job already here.
    prefetch: int = Field(default=64, ge=1, le=1000)
    # SIGTERM lets the calls on the line finish (a fax takes minutes); what is still
    # unfinished after this is hung up and redelivered to another worker.
    shutdown_grace_s: float = 900.0
    transmitter_max_calls: int = Field(
        default=50, ge=1, description="Concurrent fax calls per process."
    )
    transmitter_admit_calls: int | None = Field(
        default=None,
        ge=1,
        description="Calls at once beyond which a request goes back to the broker unclaimed "
        "(no attempt counted) for overload_retry_after_s: the process's measured capacity "
        "(benchmarks/concurrent_calls.py). None: no bound but max_calls.",
    )
    transmitter_line_pace: float = Field(
        default=1.0, ge=0, description="Media clock: 1 real time, N times faster (tests)."
    )
    transmitter_sip_host: str = "127.0.0.1"
    transmitter_sip_port: int = Field(default=0, ge=0, le=65535, description="0: any free port.")
    transmitter_request_t38: bool = True
    transmitter_t38_delay_s: float = Field(
        default=0.0,
        ge=0,
        description="Call time on G.711 before our own T.38 re-INVITE, unless the far end "
        "asks first (0: at once).",
    )
    transmitter_max_carrier_tries: int = Field(
        default=3, ge=1, le=10, description="Carriers one attempt may try (failover)."
    )
    transmitter_sip: SipSettings = SipSettings()
    transmitter_answer_timeout_s: float = Field(default=60.0, gt=0, description="In call time.")
    transmitter_max_call_s: float = Field(default=1800.0, gt=0, description="In call time.")
    transmitter_media_silence_s: float = Field(
        default=60.0, gt=0, description="Hang up when no media arrived for this long (call time)."
    )
    transmitter_lease_s: float = Field(
        default=60.0, gt=0, description="A job or channel not renewed for this long is free."
    )
    transmitter_busy_retry_s: int = Field(default=15, ge=1)
    transmitter_cancel_poll_s: float = Field(
        default=2.0, gt=0, description="How often a call looks whether its fax was cancelled."
    )
    transmitter_busy_give_up_s: float = Field(default=1800.0, ge=0)
    transmitter_worker_id: str = Field(default_factory=_default_worker_id)
    transmitter_spool_dir: Path | None = None


class CrashAfterSent:
    """TEST HOOK (FAXBOX_TEST_CRASH_AT=transmitter.before_ack): exit abruptly once a
    FaxSent is confirmed, before anything else."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def publish(self, message: Message) -> None:
        await self.publisher.publish(message)
        if isinstance(message, FaxSent):
            crashpoints.crash(SERVICE, "before_ack")


def build_deps(
    infra: Infrastructure,
    settings: Settings,
    *,
    ledger: JobLedger,
    line: FaxLine,
    outbox: Outbox,
    **overrides: Any,
) -> Deps:
    """The handlers' dependencies, real; ``overrides`` replaces any of them by name."""
    deps = Deps(
        ledger=ledger,
        slots=MongoCarrierSlots(infra.store.db[carriers.COLLECTION]),
        carriers=infra.store,
        documents=GridFsDocuments(infra.store),
        line=line,
        decisions=outbox.store,
        outbox=outbox,
        cancellations=Cancellations(infra.store.db),
        worker_id=settings.transmitter_worker_id,
        calls=asyncio.Semaphore(settings.transmitter_max_calls),
        lease_s=settings.transmitter_lease_s,
        cancel_poll_s=settings.transmitter_cancel_poll_s,
        busy_retry_s=settings.transmitter_busy_retry_s,
        busy_give_up_s=settings.transmitter_busy_give_up_s,
        max_carrier_tries=settings.transmitter_max_carrier_tries,
        spool_dir=settings.transmitter_spool_dir,
        overload_retry_s=settings.overload_retry_after_s,
        overload_bound_ms=settings.loop_lag_bound_at(settings.transmitter_line_pace),
        admit_calls=settings.transmitter_admit_calls,
        crash_at=settings.test_crash_at,
    )
    return overridden(deps, overrides)


@contextlib.asynccontextmanager
async def service(runtime: Runtime, settings: Settings) -> AsyncIterator[None]:
    prepare_spool(settings.transmitter_spool_dir)
    async with infrastructure(settings, runtime) as infra, outbox(infra, settings, SERVICE) as box:
        if crashpoints.armed(settings.test_crash_at, SERVICE, "before_ack"):
            box = Outbox(box.store, CrashAfterSent(box.publisher), name=SERVICE)
        ledger = jobs.MongoJobLedger(infra.store.db[jobs.COLLECTION])
        await ledger.ensure_indexes()
        ua = await start_user_agent(
            settings.transmitter_sip_host,
            settings.transmitter_sip_port,
            settings.transmitter_sip,
            pace=settings.transmitter_line_pace,
            user="faxbox-transmitter",
            accept_t38=settings.transmitter_line_pace > 0,
        )
        runtime.add_check("sip", lambda: ua.is_open)
        line = SipFaxLine(
            ua,
            answer_timeout_s=settings.transmitter_answer_timeout_s,
            max_call_s=settings.transmitter_max_call_s,
            request_t38=settings.transmitter_request_t38,
            media_silence_s=settings.transmitter_media_silence_s,
            secrets=settings.box(),
            t38_delay_s=settings.transmitter_t38_delay_s,
        )
        deps = build_deps(
            infra, settings, ledger=ledger, line=line, outbox=box, load=runtime.loop_lag
        )
        log.info(
            "transmitter %s: SIP on %s:%d, pace %s, up to %d calls",
            settings.transmitter_worker_id,
            ua.host,
            ua.port,
            settings.transmitter_line_pace,
            settings.transmitter_max_calls,
        )
        consumer = infra.bus.consumer(
            SERVICE,
            {
                OutboundFaxRequested: box.consuming(partial(handle_outbound, deps=deps)),
                FaxCancelRequested: box.consuming(partial(handle_cancel, deps=deps)),
            },
        )
        try:
            async with consumer.running(settings.shutdown_grace_s):
                yield
        finally:
            await ua.close()


def main() -> None:
    """``python -m faxbox.transmitter``: the settings from the environment, then run."""
    runner.main(SERVICE, Settings, service)
