"""The watcher's decisions with fakes of its ports: IDLE or poll, reconnect, lease."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import pytest
from pydantic import SecretStr

from faxbox.mail_poller.config import MailboxConfig
from faxbox.mail_poller.handlers import IntakeDeps
from faxbox.mail_poller.imap import ConnectionLost, WaitMode
from faxbox.mail_poller.ports import Destination, FetchedMessage
from faxbox.mail_poller.watcher import MailboxWatcher, Timing, WatcherState
from faxbox.shared.outbox import Outbox
from faxbox.shared.testing import MemoryDecisionStore, MemoryPublisher
from tests.unit.mail_poller.mail_poller_fakes import (
    FakeClock,
    FakeDeadLetters,
    FakeFolder,
    FakeLedger,
    FakeRawStore,
    mail,
)

FAST = Timing(lease_renew_s=0.05, lease_retry_s=0.02, reconnect_base_s=0.01, reconnect_cap_s=0.05)


def outbox(publisher: MemoryPublisher) -> Outbox:
    return Outbox(MemoryDecisionStore(), publisher)


class FakeLease:
    def __init__(self, grant: bool = True) -> None:
        self.grant = grant
        self.held = False
        self.acquires = 0
        self.released = 0

    async def try_acquire(self) -> bool:
        self.acquires += 1
        self.held = self.grant
        return self.grant

    async def release(self) -> None:
        self.released += 1
        self.held = False


class FakeSession(FakeFolder):
    def __init__(self, capabilities: frozenset[str], fail_opens: int = 0) -> None:
        super().__init__()
        self._capabilities = capabilities
        self.fail_opens = fail_opens
        self.opens = 0
        self.closes = 0
        self.idle_waits = 0
        self.woken = asyncio.Event()

    @property
    def capabilities(self) -> frozenset[str]:
        return self._capabilities

    @property
    def connected(self) -> bool:
        return True

    async def open(self) -> None:
        self.opens += 1
        if self.fail_opens:
            self.fail_opens -= 1
            raise ConnectionLost("connection refused")

    async def close(self, unregister_push: bool = False) -> None:
        self.closes += 1

    async def search_all(self) -> list[int]:
        return sorted(self.messages)

    async def wait_for_change(self, timeout_s: float, interrupt: asyncio.Event) -> None:
        self.idle_waits += 1
        self.woken.clear()
        waiters = {
            asyncio.ensure_future(self.woken.wait()),
            asyncio.ensure_future(interrupt.wait()),
        }
        _, pending = await asyncio.wait(waiters, timeout=timeout_s, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()


def make_watcher(
    session: FakeSession, lease: FakeLease, *, use_idle: bool = True
) -> tuple[MailboxWatcher, MemoryPublisher]:
    publisher = MemoryPublisher()
    deps = IntakeDeps(FakeLedger(), FakeRawStore(), outbox(publisher), clock=FakeClock())
    config = MailboxConfig(
        host="imap.test",
        username="u",
        password=SecretStr("p"),
        use_idle=use_idle,
        poll_interval_s=0.05,
        idle_refresh_s=5,
    )
    return MailboxWatcher(config, lease, deps, lambda: session, FakeDeadLetters(), FAST), publisher


async def until(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def test_idle_server_is_watched_with_idle() -> None:
    session = FakeSession(frozenset({"IMAP4rev1", "IDLE"}))
    lease = FakeLease()
    watcher, publisher = make_watcher(session, lease)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await until(lambda: session.idle_waits == 1)
    assert watcher.mode is WaitMode.idle
    assert watcher.state is WatcherState.connected

    session.deliver(mail())
    session.woken.set()  # the server's EXISTS push
    await until(lambda: len(publisher.published) == 1)

    stop.set()
    await task
    assert lease.released == 1
    assert session.closes >= 1


@pytest.mark.parametrize(
    ("capabilities", "use_idle"),
    [(frozenset({"IMAP4rev1"}), True), (frozenset({"IMAP4rev1", "IDLE"}), False)],
)
async def test_without_idle_the_folder_is_polled(
    capabilities: frozenset[str], use_idle: bool
) -> None:
    session = FakeSession(capabilities)
    watcher, publisher = make_watcher(session, FakeLease(), use_idle=use_idle)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await until(lambda: watcher.mode is WaitMode.poll)
    session.deliver(mail())  # no push: found by the next poll
    await until(lambda: len(publisher.published) == 1)
    stop.set()
    await task
    assert session.idle_waits == 0


async def test_reconnects_after_failures() -> None:
    session = FakeSession(frozenset({"IDLE"}), fail_opens=3)
    watcher, _ = make_watcher(session, FakeLease())
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await until(lambda: watcher.state is WatcherState.connected)
    assert session.opens == 4
    stop.set()
    await task


async def test_standby_never_touches_the_mailbox() -> None:
    session = FakeSession(frozenset({"IDLE"}))
    lease = FakeLease(grant=False)
    watcher, _ = make_watcher(session, lease)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await until(lambda: lease.acquires >= 3)
    assert watcher.state is WatcherState.standby
    assert watcher.healthy()
    assert session.opens == 0
    stop.set()
    await task
    assert lease.released == 0


async def test_lost_lease_ends_the_session_and_stands_by() -> None:
    session = FakeSession(frozenset({"IDLE"}))
    lease = FakeLease()
    watcher, _ = make_watcher(session, lease)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await until(lambda: watcher.state is WatcherState.connected)
    lease.grant = False  # another replica took it over
    await until(lambda: session.closes >= 1 and watcher.state is WatcherState.standby)
    stop.set()
    await task


async def test_a_failing_message_does_not_hold_up_the_next_one() -> None:
    session = FakeSession(frozenset({"IDLE"}))
    watcher, publisher = make_watcher(session, FakeLease())
    session.deliver(b"Message-ID: <poison@example.com>\r\n\r\nbody")
    session.deliver(mail())
    original_publish = publisher.publish

    async def refuse_poison(message):  # type: ignore[no-untyped-def]
        if message.rfc822_message_id == "<poison@example.com>":
            raise ValueError("cannot publish this one")
        await original_publish(message)

    publisher.publish = refuse_poison  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await until(lambda: len(publisher.published) == 1)
    assert publisher.published[0].rfc822_message_id == "<abc@Example.COM>"
    assert 1 in session.messages  # the failing one stays, to be tried again

    publisher.publish = original_publish  # type: ignore[method-assign]
    await until(lambda: not session.messages)  # retried after a backoff, then moved
    stop.set()
    await task


class ArrivesDuringTake(FakeSession):
    """A second mail lands while the first is being fetched, as a server reports it then."""

    def __init__(self) -> None:
        super().__init__(frozenset({"IMAP4rev1", "IDLE"}))
        self.late: bytes | None = None

    async def fetch(self, uid: int) -> FetchedMessage | None:
        if self.late is not None:
            self.deliver(self.late)
            self.late = None
        return await super().fetch(uid)


async def test_mail_arriving_while_others_are_taken_is_not_left_until_the_next_push() -> None:
    session = ArrivesDuringTake()
    session.deliver(mail("<first@example.com>"))
    session.late = mail("<second@example.com>")
    watcher, publisher = make_watcher(session, FakeLease())
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    # No EXISTS push ever comes in IDLE for the second one: the server announced it
    # while the first was fetched.
    await until(lambda: len(publisher.published) == 2)
    stop.set()
    await task
    assert session.idle_waits <= 1


class DroppingSession(FakeSession):
    """Its connection dies whenever the broken UID is read, as after a FETCH timeout."""

    def __init__(self) -> None:
        super().__init__(frozenset({"IDLE"}))
        self.alive = True

    @property
    def connected(self) -> bool:
        return self.alive

    async def open(self) -> None:
        await super().open()
        self.alive = True

    async def size(self, uid: int) -> int | None:
        if uid in self.broken:
            self.alive = False
        return await super().size(uid)


@pytest.mark.parametrize("session_dies", [False, True], ids=["error", "timeout"])
async def test_a_uid_that_cannot_be_read_is_set_aside_and_the_next_taken(
    session_dies: bool,
) -> None:
    session = DroppingSession() if session_dies else FakeSession(frozenset({"IDLE"}))
    timing = dataclasses.replace(FAST, fetch_attempts=3, fetch_retry_base_s=0.01)
    publisher = MemoryPublisher()
    dead_letters = FakeDeadLetters()
    deps = IntakeDeps(FakeLedger(), FakeRawStore(), outbox(publisher), clock=FakeClock())
    config = MailboxConfig(host="imap.test", username="u", password=SecretStr("p"))
    watcher = MailboxWatcher(config, FakeLease(), deps, lambda: session, dead_letters, timing)
    stuck = session.deliver(mail("<stuck@example.com>"))
    session.broken[stuck] = TimeoutError("IMAP command timed out after 60s")
    session.deliver(mail("<next@example.com>"))
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))

    await until(lambda: len(publisher.published) == 1)
    assert publisher.published[0].rfc822_message_id == "<next@example.com>"
    await until(lambda: len(session.moved[Destination.failed]) == 1)
    ((record, reason, kind),) = dead_letters.records
    assert kind == "fetch_failed"
    assert (record["uid"], record["attempts"], record["moved_to"]) == (stuck, 3, "Faxbox/Failed")
    assert "timed out" in record["error"]
    assert f"UID {stuck}" in reason
    assert watcher.fetch_failures == {}

    session.deliver(mail("<later@example.com>"))  # the folder keeps flowing
    session.woken.set()
    await until(lambda: len(publisher.published) == 2)
    stop.set()
    await task
    assert (session.opens > 1) is session_dies


async def test_a_broken_uid_waits_for_its_backoff_not_the_folder() -> None:
    session = FakeSession(frozenset({"IDLE"}))
    timing = dataclasses.replace(FAST, fetch_attempts=100, fetch_retry_base_s=30)
    publisher = MemoryPublisher()
    deps = IntakeDeps(FakeLedger(), FakeRawStore(), outbox(publisher), clock=FakeClock())
    config = MailboxConfig(host="imap.test", username="u", password=SecretStr("p"))
    watcher = MailboxWatcher(config, FakeLease(), deps, lambda: session, FakeDeadLetters(), timing)
    stuck = session.deliver(mail("<stuck@example.com>"))
    session.broken[stuck] = ConnectionError("NO [SERVERBUG] internal error")
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await until(lambda: session.idle_waits >= 1)
    session.deliver(mail("<new@example.com>"))
    session.woken.set()
    await until(lambda: len(publisher.published) == 1)
    assert watcher.fetch_failures[(7, stuck)].attempts == 1  # not retried meanwhile
    stop.set()
    await task
