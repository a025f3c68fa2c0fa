"""One mailbox's life: stand by for the lease, then watch the folder until stopped.

While the lease is held: connect, take every message in the folder, then wait for a
change (IDLE where the server advertises it, else sleep for the poll interval) and
rescan. Any error ends the session and a new one follows after a capped exponential
backoff with jitter. Losing the lease (a renewal refused, or none succeeded within the
TTL) interrupts the session before the next publish or move.

A message the server does not hand over (``FetchFailed``: a timeout, an error, the
connection dropped while reading it) never holds up the ones after it: its UID is
skipped until its own backoff has passed, the others are taken meanwhile, and after
``mail_poller_fetch_attempts`` tries it is set aside: a dead-letter record (confirmed),
then a move to the failed folder, and an error in the log. The count lives here, so it survives
reconnects (a timeout ends the session).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from faxbox.mail_poller import metrics
from faxbox.mail_poller.config import MailboxConfig
from faxbox.mail_poller.handlers import FetchFailed, IntakeDeps, LeaseLost, take_message
from faxbox.mail_poller.imap import ImapError, WaitMode, choose_wait_mode
from faxbox.mail_poller.ports import DeadLetters, Destination, MailFolder

log = logging.getLogger(__name__)


class Lease(Protocol):
    @property
    def held(self) -> bool: ...

    async def try_acquire(self) -> bool: ...

    async def release(self) -> None: ...


class Session(MailFolder, Protocol):
    @property
    def capabilities(self) -> frozenset[str]: ...

    @property
    def connected(self) -> bool: ...

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
    fetch_attempts: int = 5
    fetch_retry_base_s: float = 1.0
    fetch_retry_cap_s: float = 60.0


@dataclass(slots=True)
class FetchFailures:
    """One UID's failed reads so far."""

    attempts: int
    retry_at: float  # time.monotonic() before which it is not tried again
    last_error: str


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
        dead_letters: DeadLetters,
        timing: Timing = Timing(),
    ) -> None:
        self.config = config
        self.lease = lease
        self.deps = dataclasses.replace(deps, ensure_active=self._ensure_active)
        self.session_factory = session_factory
        self.dead_letters = dead_letters
        self.timing = timing
        self.state = WatcherState.standby
        self.mode: WaitMode | None = None
        # (UIDVALIDITY, UID) -> its failed reads; forgotten once it leaves the folder.
        self.fetch_failures: dict[tuple[int, int], FetchFailures] = {}

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
            taken = 0
            uids = await session.search_all()
            self._forget_gone(session.uid_validity, uids)
            for uid in uids:
                if interrupt.is_set():
                    return
                key = (session.uid_validity, uid)
                failures = self.fetch_failures.get(key)
                if failures is not None:
                    if failures.attempts >= self.timing.fetch_attempts:
                        await self._set_aside(session, uid, failures)
                        continue
                    if failures.retry_at > time.monotonic():
                        continue  # its turn comes after its backoff; the others go now
                try:
                    await take_message(session, uid, self.deps)
                except FetchFailed as exc:
                    failures = self._fetch_failed(key, exc)
                    if not session.connected:  # a timeout or a drop ends the session
                        raise ImapError(f"session lost while reading UID {uid}") from exc
                    if failures.attempts >= self.timing.fetch_attempts:
                        await self._set_aside(session, uid, failures)
                    continue
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
                    continue
                taken += 1
                self.fetch_failures.pop(key, None)
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
            if taken:
                # Mail that arrived while these were taken was announced during those
                # commands, not in an IDLE that starts later: look again before waiting.
                continue
            self.mode = choose_wait_mode(session.capabilities, self.config.use_idle)
            if self.mode is WaitMode.idle:
                timeout = self._until_next_retry(self.config.idle_refresh_s)
                await session.wait_for_change(timeout, interrupt)
            else:
                await _wait(interrupt, self._until_next_retry(self.config.poll_interval_s))

    def _forget_gone(self, uid_validity: int, uids: list[int]) -> None:
        present = set(uids)
        for key in [k for k in self.fetch_failures if k[0] != uid_validity or k[1] not in present]:
            del self.fetch_failures[key]

    def _until_next_retry(self, longest_s: float) -> float:
        due = [f.retry_at for f in self.fetch_failures.values()]
        if not due:
            return longest_s
        return max(0.0, min(longest_s, min(due) - time.monotonic()))

    def _fetch_failed(self, key: tuple[int, int], exc: FetchFailed) -> FetchFailures:
        earlier = self.fetch_failures.get(key)
        attempts = 1 if earlier is None else earlier.attempts + 1
        delay = backoff_delay(
            attempts, self.timing.fetch_retry_base_s, self.timing.fetch_retry_cap_s
        )
        failures = FetchFailures(attempts, time.monotonic() + delay, str(exc))
        self.fetch_failures[key] = failures
        metrics.FETCH_FAILURES.labels(self.name).inc()
        log.warning(
            "could not read a message; trying it again later",
            extra={
                "mailbox": self.name,
                "uid": key[1],
                "attempt": attempts,
                "retry_in_s": round(delay, 2),
                "error": str(exc),
            },
        )
        return failures

    async def _set_aside(self, session: Session, uid: int, failures: FetchFailures) -> None:
        """Record it for operators (confirmed), then move it out of the way."""
        folder = self.config.failed_folder
        reason = (
            f"UID {uid} of {self.name} could not be read in {failures.attempts} tries "
            f"({failures.last_error}); moved to {folder}"
        )
        record = {
            "mailbox": self.name,
            "uid_validity": session.uid_validity,
            "uid": uid,
            "attempts": failures.attempts,
            "error": failures.last_error,
            "moved_to": folder,
            "at": datetime.now(UTC).isoformat(),
        }
        self._ensure_active()
        await self.dead_letters.dead_letter(record, reason, "fetch_failed")
        self._ensure_active()
        await session.move(uid, Destination.failed)
        self.fetch_failures.pop((session.uid_validity, uid), None)
        metrics.MESSAGES_TAKEN.labels(self.name, "set_aside").inc()
        log.error(reason, extra={"mailbox": self.name, "uid": uid})
