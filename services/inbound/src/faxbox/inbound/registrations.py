"""The inbound receiver's registrations: one per carrier flagged ``sip_register``.

Calls for our numbers reach us on the contact we register (``faxbox.fax.sip.registration``
does the REGISTERs, refreshes and back-off). This keeps the set of registrations in step
with the carriers collection (checked every ``reload_s``: a carrier added, changed or
removed starts, restarts or stops its registration), and reports every change of every
registration to ``/metrics`` and to the ``sip_registrations`` collection the portal's
dashboard shows. ``stop`` de-registers (Expires: 0) from every carrier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from faxbox.fax.sip.carrier import registration
from faxbox.fax.sip.registration import (
    RegistrarHost,
    Registration,
    RegistrationState,
    RegistrationStatus,
)
from faxbox.inbound import metrics
from faxbox.inbound.ports import CarrierSource
from faxbox.shared.secretbox import SecretBox, SecretKeyMissing, SecretUnreadable
from faxbox.shared.store import Carrier
from faxbox.shared.store.registrations import (
    SipRegistrationRecord,
    SipRegistrations,
    record_id,
)

log = logging.getLogger(__name__)


def _fingerprint(carrier: Carrier) -> tuple[object, ...]:
    """What, when it changes, needs a new registration."""
    return (
        carrier.sip_host,
        carrier.sip_port,
        carrier.sip_uri,
        carrier.sip_transport,
        carrier.sip_domain,
        carrier.sip_username,
        carrier.sip_password,
        carrier.outbound_proxy,
        carrier.register_expires_s,
    )


class Registrations:
    def __init__(
        self,
        ua: RegistrarHost,
        carriers: CarrierSource,
        board: SipRegistrations,
        instance: str,
        *,
        secrets: SecretBox | None = None,
        reload_s: float = 60.0,
    ) -> None:
        self.ua = ua
        self.secrets = secrets  # opens the carriers' sealed passwords
        self.carriers = carriers
        self.board = board
        self.instance = instance
        self.reload_s = reload_s
        self.active: dict[str, tuple[tuple[object, ...], Registration]] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sync()
        self._loop = asyncio.create_task(self._reload_forever())

    async def _reload_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reload_s)
            try:
                await self.sync()
            except Exception:
                log.warning("could not reload the carriers to register with", exc_info=True)

    async def sync(self) -> None:
        wanted = {
            c.id: c
            for c in await self.carriers.list_carriers()
            if c.sip_register and c.sip_username
        }
        for carrier_id in list(self.active):
            carrier = wanted.get(carrier_id)
            if carrier is None or _fingerprint(carrier) != self.active[carrier_id][0]:
                await self._stop(carrier_id, forget=carrier is None)
        for carrier_id, carrier in wanted.items():
            if carrier_id not in self.active:
                try:
                    self._start(carrier)
                except (SecretKeyMissing, SecretUnreadable) as exc:
                    # The others still register; this one is tried again at each reload.
                    log.error("cannot register with %s: %s", carrier.name, exc)

    def _start(self, carrier: Carrier) -> None:
        def changed(status: RegistrationStatus) -> None:
            self._report(carrier, status)

        started = registration(self.ua, carrier, secrets=self.secrets, on_change=changed)
        self.active[carrier.id] = (_fingerprint(carrier), started)
        log.info("registering with %s as %s", carrier.name, started.aor)
        changed(started.status)
        started.start()

    async def _stop(self, carrier_id: str, *, forget: bool) -> None:
        _, running = self.active.pop(carrier_id)
        await running.stop()
        if forget:
            self._spawn(self.board.forget(carrier_id, self.instance))

    def _report(self, carrier: Carrier, status: RegistrationStatus) -> None:
        metrics.SIP_REGISTERED.labels(carrier.name).set(1 if status.registered else 0)
        if status.state is RegistrationState.FAILED:
            metrics.SIP_REGISTRATION_FAILURES.labels(carrier.name).inc()
        record = SipRegistrationRecord(
            id=record_id(carrier.id, self.instance),
            carrier_id=carrier.id,
            carrier_name=carrier.name,
            instance=self.instance,
            aor=status.aor,
            registrar=status.registrar,
            state=status.state.value,
            contact=status.contact,
            expires_at=status.expires_at,
            last_status=status.last_status,
            last_reason=status.last_reason,
            failures=status.failures,
            updated_at=status.updated_at or datetime.now(UTC),
        )
        self._spawn(self.board.record(record))

    def _spawn(self, write: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            try:
                await write
            except Exception:
                # The dashboard misses one change; the next change writes the whole state.
                log.warning("could not record a registration's status", exc_info=True)

        task = asyncio.create_task(run())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def status(self) -> list[RegistrationStatus]:
        return [running.status for _, running in self.active.values()]

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        for carrier_id in list(self.active):
            await self._stop(carrier_id, forget=False)
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=5)
