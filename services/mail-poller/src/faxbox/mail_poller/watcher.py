"""One mailbox's life: stand by for the lease, then watch the folder until stopped.

While the lease is held: connect, take every message in the folder, then wait for a
change (IDLE where the server advertises it, else sleep for the poll interval) and
rescan. Any error ends the session and a new one follows after a capped exponential
backoff with jitter. Losing the lease (a renewal refused, or none succeeded within the
TTL) interrupts the session before the next publish or move.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from faxbox.mail_poller import metrics
from faxbox.mail_poller.config import MailboxConfig
from faxbox.mail_poller.imap import ImapError, WaitMode, choose_wait_mode
from faxbox.mail_poller.intake import IntakeDeps, LeaseLost, take_message
from faxbox.mail_poller.ports import MailFolder

log = logging.getLogger(__name__)


class Lease(Protocol):
    @property
    def held(self) -> bool: ...

    async def try_acquire(self) -> bool: ...

    async def release(self) -> None: ...


class Session(MailFolder, Protocol):
    @property
    def capabilities(self) -> frozenset[str]: ...

    async def open(self) -> None: ...

    async def close(self, unregister_push: bool = False) -> None: ...

    async def search_all(self) -> list[int]: ...

    async def wait_for_change(self, timeout_s: float, interrupt: asyncio.Event) -> None: ...


class WatcherState(StrEnum):
    standby = "standby"  # another replica holds the lease (or none could be taken yet)
    connecting = "connecting"  # lease held, no IMAP session (connecting or backing off)
    connected = "connected"


@dataclass(frozen=True, slots=True)
class Timing:
    lease_renew_s: float = 3.0
    lease_retry_s: float = 1.0
    reconnect_base_s: float = 0.5
    reconnect_cap_s: float = 30.0


def backoff_delay(
    failures: int, base_s: float, cap_s: float, rng: Callable[[], float] = random.random
) -> float:
    """Capped exponential delay after ``failures`` failures in a row, with 50-100 % jitter."""
    if failures <= 0:
        return 0.0
    delay = min(cap_s, base_s * float(2 ** min(failures - 1, 30)))
    return delay * (0.5 + rng() / 2)


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)


class MailboxWatcher:
    def __init__(
        self,
        config: MailboxConfig,
        lease: Lease,
        deps: IntakeDeps,
        session_factory: Callable[[], Session],
        timing: Timing = Timing(),
    ) -> None:
        self.config = config
        self.lease = lease
        self.deps = dataclasses.replace(deps, ensure_active=self._ensure_active)
        self.session_factory = session_factory
        self.timing = timing
        self.state = WatcherState.standby
        self.mode: WaitMode | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def healthy(self) -> bool:
        """Readiness: a standby replica is fine; an active one needs its IMAP session."""
        return self.state is not WatcherState.connecting

    def _ensure_active(self) -> None:
        if not self.lease.held:
            raise LeaseLost(self.name)

    def _set_state(self, state: WatcherState) -> None:
        if state is not self.state:
            log.info("mailbox %s", state.value, extra={"mailbox": self.name})
        self.state = state
        metrics.IMAP_CONNECTED.labels(self.name).set(state is WatcherState.connected)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                acquired = await self.lease.try_acquire()
            except Exception:
                log.warning("lease check failed", extra={"mailbox": self.name}, exc_info=True)
                acquired = False
            if not acquired:
                self._set_state(WatcherState.standby)
                await _wait(stop, self.timing.lease_retry_s)
                continue
            log.info("lease taken; active", extra={"mailbox": self.name})
            metrics.LEASE_HELD.labels(self.name).set(1)
            interrupt = asyncio.Event()
            keeper = asyncio.create_task(self._keep_lease(interrupt))
            relay = asyncio.create_task(self._relay(stop, interrupt))
            try:
                await self._active(interrupt)
            finally:
                keeper.cancel()
                relay.cancel()
                metrics.LEASE_HELD.labels(self.name).set(0)
                self._set_state(WatcherState.standby)
                if self.lease.held:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(asyncio.wait_for(self.lease.release(), 5))
                    log.info("lease released", extra={"mailbox": self.name})

    @staticmethod
    async def _relay(stop: asyncio.Event, interrupt: asyncio.Event) -> None:
        await stop.wait()
        interrupt.set()

    async def _keep_lease(self, interrupt: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.timing.lease_renew_s)
            try:
                renewed = await asyncio.wait_for(
                    self.lease.try_acquire(), self.timing.lease_renew_s
                )
            except Exception:
                log.warning("lease renewal failed", extra={"mailbox": self.name}, exc_info=True)
                renewed = self.lease.held
            if not renewed:
                log.error("lease lost; standing by", extra={"mailbox": self.name})
                interrupt.set()
                return

    async def _active(self, interrupt: asyncio.Event) -> None:
        failures = 0
        while not interrupt.is_set():
            session = self.session_factory()
            self._set_state(WatcherState.connecting)
            try:
                await session.open()
                self._set_state(WatcherState.connected)
                failures = 0
                await self._serve(session, interrupt)
            except LeaseLost:
                return
            except Exception as exc:
                failures += 1
                metrics.RECONNECTS.labels(self.name).inc()
                log.warning(
                    "IMAP session ended: %s: %s",
                    type(exc).__name__,
                    exc,
                    extra={"mailbox": self.name, "failures": failures},
                )
            finally:
                self._set_state(WatcherState.connecting)
                # While the lease is ours no successor has registered its push URL yet.
                await session.close(unregister_push=self.lease.held)
            if interrupt.is_set():
                return
            await _wait(
                interrupt,
                backoff_delay(failures, self.timing.reconnect_base_s, self.timing.reconnect_cap_s),
            )

    async def _serve(self, session: Session, interrupt: asyncio.Event) -> None:
        failed_scans = 0
        while not interrupt.is_set():
            failed = 0
            uids = await session.search_all()
            for uid in uids:
                if interrupt.is_set():
                    return
                try:
                    await take_message(session, uid, self.deps)
                except (LeaseLost, ImapError, TimeoutError):
                    raise  # the session itself is gone or no longer ours
                except Exception:
                    # One bad message (or a database/broker hiccup) must not hold up
                    # the mails behind it: they are tried now, this one again later.
                    failed += 1
                    metrics.MESSAGES_FAILED.labels(self.name).inc()
                    log.exception(
                        "could not take message", extra={"mailbox": self.name, "uid": uid}
                    )
            if failed:
                failed_scans += 1
                await _wait(
                    interrupt,
                    backoff_delay(
                        failed_scans, self.timing.reconnect_base_s, self.timing.reconnect_cap_s
                    ),
                )
                continue
            failed_scans = 0
            if uids:
                # Mail that arrived while these were taken was announced during those
                # commands, not in an IDLE that starts later: look again before waiting.
                continue
            self.mode = choose_wait_mode(session.capabilities, self.config.use_idle)
            if self.mode is WaitMode.idle:
                await session.wait_for_change(self.config.idle_refresh_s, interrupt)
            else:
                await _wait(interrupt, self.config.poll_interval_s)
