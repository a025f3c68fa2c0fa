"""The intake: store → decide → publish (confirmed) → move, exactly once."""

from __future__ import annotations

import dataclasses

import pytest

from faxbox.mail_poller.handlers import FetchFailed, IntakeDeps, LeaseLost, Outcome, take_message
from faxbox.mail_poller.keys import ledger_id
from faxbox.mail_poller.ports import Destination
from faxbox.shared.outbox import Outbox, Recorded
from faxbox.shared.testing import MemoryDecisionStore, MemoryPublisher
from tests.unit.mail_poller.mail_poller_fakes import (
    FakeClock,
    FakeFolder,
    FakeLedger,
    FakeRawStore,
    fax_realm,
    mail,
)


class Crash(Exception):
    """Stands for the process dying at that point."""


@pytest.fixture
def ledger() -> FakeLedger:
    return FakeLedger()


@pytest.fixture
def raw_store() -> FakeRawStore:
    return FakeRawStore()


@pytest.fixture
def publisher() -> MemoryPublisher:
    return MemoryPublisher()


@pytest.fixture
def decisions() -> MemoryDecisionStore:
    return MemoryDecisionStore()


@pytest.fixture
def folder() -> FakeFolder:
    return FakeFolder()


@pytest.fixture
def deps(
    ledger: FakeLedger,
    raw_store: FakeRawStore,
    decisions: MemoryDecisionStore,
    publisher: MemoryPublisher,
) -> IntakeDeps:
    return IntakeDeps(ledger, raw_store, Outbox(decisions, publisher), clock=FakeClock())


async def decision(decisions: MemoryDecisionStore, ledger: FakeLedger, entry_id: str) -> Recorded:
    """The outbox's decision on the mail of one ledger entry."""
    recorded = await decisions.get(ledger.entries[entry_id].message_key)
    assert recorded is not None
    return recorded


async def test_new_message_is_stored_published_then_moved(
    folder: FakeFolder,
    deps: IntakeDeps,
    ledger: FakeLedger,
    raw_store: FakeRawStore,
    publisher: MemoryPublisher,
) -> None:
    raw = mail()
    uid = folder.deliver(raw)

    assert await take_message(folder, uid, deps) is Outcome.published

    assert folder.processed == [raw]
    [message] = publisher.published
    entry = ledger.entries[ledger_id(folder.mailbox, 7, uid)]
    assert entry.moved_at is not None
    assert entry.message_key == f"{folder.mailbox}|all|mid:abc@example.com"
    assert (message.fax_id, message.message_id) == (entry.fax_id, entry.message_id)
    assert (message.mailbox, message.uid_validity, message.uid) == (folder.mailbox, 7, uid)
    assert message.rfc822_message_id == "<abc@Example.COM>"
    assert raw_store.files[message.raw.file_id] == raw
    assert message.raw.account_id == "intake"


async def test_nothing_is_moved_when_the_publish_fails(
    folder: FakeFolder,
    deps: IntakeDeps,
    ledger: FakeLedger,
    decisions: MemoryDecisionStore,
    publisher: MemoryPublisher,
) -> None:
    uid = folder.deliver(mail())
    publisher.failures.append(ConnectionError("broker down"))

    with pytest.raises(ConnectionError):
        await take_message(folder, uid, deps)

    assert uid in folder.messages
    assert (await decision(decisions, ledger, ledger_id(folder.mailbox, 7, uid))).owed
    # The next run publishes the stored copy, without fetching or storing it again.
    fetches = folder.fetches
    assert await take_message(folder, uid, deps) is Outcome.republished
    assert len(publisher.published) == 1
    assert folder.fetches == fetches
    assert folder.processed


async def test_crash_after_recorded_publish_only_moves_on_restart(
    folder: FakeFolder,
    ledger: FakeLedger,
    raw_store: FakeRawStore,
    publisher: MemoryPublisher,
) -> None:
    def crash() -> None:
        raise Crash

    uid = folder.deliver(mail())
    box = Outbox(MemoryDecisionStore(), publisher)
    crashing = IntakeDeps(ledger, raw_store, box, clock=FakeClock(), after_publish=crash)
    with pytest.raises(Crash):
        await take_message(folder, uid, crashing)
    assert uid in folder.messages

    restarted = IntakeDeps(ledger, raw_store, box, clock=FakeClock())
    assert await take_message(folder, uid, restarted) is Outcome.moved_only

    assert len(publisher.published) == 1
    assert uid not in folder.messages
    assert ledger.entries[ledger_id(folder.mailbox, 7, uid)].moved_at is not None


async def test_confirmed_but_unrecorded_publish_is_repeated_with_the_same_ids(
    folder: FakeFolder,
    deps: IntakeDeps,
    decisions: MemoryDecisionStore,
    publisher: MemoryPublisher,
) -> None:
    uid = folder.deliver(mail())
    decisions.forget_failures.append(ConnectionError("database went away"))

    with pytest.raises(ConnectionError):
        await take_message(folder, uid, deps)
    assert await take_message(folder, uid, deps) is Outcome.republished

    first, second = publisher.published
    assert (first.message_id, first.fax_id, first.raw) == (
        second.message_id,
        second.fax_id,
        second.raw,
    )


async def test_failed_move_is_retried_without_publishing_again(
    folder: FakeFolder,
    deps: IntakeDeps,
    ledger: FakeLedger,
    decisions: MemoryDecisionStore,
    publisher: MemoryPublisher,
) -> None:
    uid = folder.deliver(mail())
    folder.fail_next_move = True

    with pytest.raises(ConnectionError):
        await take_message(folder, uid, deps)
    entry_id = ledger_id(folder.mailbox, 7, uid)
    assert not (await decision(decisions, ledger, entry_id)).owed
    assert ledger.entries[entry_id].moved_at is None

    assert await take_message(folder, uid, deps) is Outcome.moved_only
    assert len(publisher.published) == 1
    assert ledger.entries[entry_id].moved_at is not None


async def test_same_message_id_again_is_moved_without_a_second_publish(
    folder: FakeFolder,
    deps: IntakeDeps,
    ledger: FakeLedger,
    raw_store: FakeRawStore,
    publisher: MemoryPublisher,
) -> None:
    first = folder.deliver(mail("<abc@example.com>"))
    await take_message(folder, first, deps)
    # Resent by the MTA: same Message-ID (domain case differs), other bytes, new UID.
    second = folder.deliver(mail("< abc@EXAMPLE.com >", body="resent"))

    assert await take_message(folder, second, deps) is Outcome.duplicate

    assert len(publisher.published) == 1
    assert len(folder.processed) == 2
    entry = ledger.entries[ledger_id(folder.mailbox, 7, second)]
    assert entry.moved_at is not None
    assert entry.duplicate_of == ledger_id(folder.mailbox, 7, first)
    assert entry.message_key == ledger.entries[entry.duplicate_of].message_key
    assert entry.message_id is None
    assert raw_store.puts == 1


async def test_same_mail_in_a_new_uidvalidity_is_not_published_again(
    deps: IntakeDeps, publisher: MemoryPublisher
) -> None:
    before = FakeFolder(uid_validity=1)
    await take_message(before, before.deliver(mail()), deps)
    # The folder was recreated: UIDs restart, the mail is put back by someone.
    after = FakeFolder(uid_validity=2)
    assert await take_message(after, after.deliver(mail()), deps) is Outcome.duplicate
    assert len(publisher.published) == 1


async def test_mail_without_message_id_is_keyed_by_its_content(
    folder: FakeFolder, deps: IntakeDeps, ledger: FakeLedger, publisher: MemoryPublisher
) -> None:
    a = folder.deliver(mail(None, body="one"))
    b = folder.deliver(mail(None, body="two"))
    c = folder.deliver(mail(None, body="one"))

    outcomes = [await take_message(folder, uid, deps) for uid in (a, b, c)]

    assert outcomes == [Outcome.published, Outcome.published, Outcome.duplicate]
    assert len(publisher.published) == 2
    keys = [e.message_key for e in ledger.entries.values()]
    assert all(k.startswith(f"{folder.mailbox}|all|sha256:") for k in keys)
    assert None not in keys


async def test_duplicate_of_a_never_published_mail_publishes_the_first_copy(
    deps: IntakeDeps, ledger: FakeLedger, decisions: MemoryDecisionStore, publisher: MemoryPublisher
) -> None:
    folder = FakeFolder()
    first = folder.deliver(mail())
    publisher.failures.append(ConnectionError("broker down"))
    with pytest.raises(ConnectionError):
        await take_message(folder, first, deps)
    del folder.messages[first]  # someone removed it from the folder meanwhile

    second = folder.deliver(mail())
    assert await take_message(folder, second, deps) is Outcome.duplicate

    [message] = publisher.published
    assert message.uid == first
    assert not (await decision(decisions, ledger, ledger_id(folder.mailbox, 7, first))).owed


async def test_racing_insert_of_the_same_mail_discards_the_extra_copy(
    folder: FakeFolder,
    deps: IntakeDeps,
    decisions: MemoryDecisionStore,
    raw_store: FakeRawStore,
    publisher: MemoryPublisher,
) -> None:
    first = folder.deliver(mail())
    await take_message(folder, first, deps)
    second = folder.deliver(mail())
    # Another poller's decision appears between our lookup and our record.
    original_get = decisions.get
    calls = 0

    async def find_late(key: str):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return None if calls == 1 else await original_get(key)

    decisions.get = find_late  # type: ignore[method-assign]

    assert await take_message(folder, second, deps) is Outcome.duplicate
    assert len(publisher.published) == 1
    assert len(raw_store.files) == 1


async def test_lost_lease_stops_before_publish_and_move(
    folder: FakeFolder,
    ledger: FakeLedger,
    raw_store: FakeRawStore,
    decisions: MemoryDecisionStore,
    publisher: MemoryPublisher,
) -> None:
    def lost() -> None:
        raise LeaseLost(folder.mailbox)

    uid = folder.deliver(mail())
    box = Outbox(decisions, publisher)
    deps = IntakeDeps(ledger, raw_store, box, clock=FakeClock(), ensure_active=lost)

    with pytest.raises(LeaseLost):
        await take_message(folder, uid, deps)

    assert publisher.published == []
    assert uid in folder.messages
    entry_id = ledger_id(folder.mailbox, 7, uid)
    assert (await decision(decisions, ledger, entry_id)).owed
    assert ledger.entries[entry_id].moved_at is None


async def test_vanished_message_is_skipped(folder: FakeFolder, deps: IntakeDeps) -> None:
    assert await take_message(folder, 42, deps) is Outcome.vanished


@pytest.fixture
def realm_deps(deps: IntakeDeps) -> IntakeDeps:
    return dataclasses.replace(deps, is_realm=fax_realm)


async def test_two_envelope_copies_of_one_mail_are_two_mails(
    folder: FakeFolder, realm_deps: IntakeDeps, ledger: FakeLedger, publisher: MemoryPublisher
) -> None:
    first = folder.deliver(mail(envelope="+12125550147@fax.example.com"))
    second = folder.deliver(mail(envelope="2125550148@fax.example.com"))
    again = folder.deliver(mail(envelope="2125550148@fax.example.com"))  # a second hop's copy

    outcomes = [await take_message(folder, uid, realm_deps) for uid in (first, second, again)]

    assert outcomes == [Outcome.published, Outcome.published, Outcome.duplicate]
    assert len({m.fax_id for m in publisher.published}) == 2
    keys = sorted(e.message_key for e in ledger.entries.values() if e.duplicate_of is None)
    assert keys == [
        f"{folder.mailbox}|+12125550147@fax.example.com|mid:abc@example.com",
        f"{folder.mailbox}|2125550148@fax.example.com|mid:abc@example.com",
    ]
    assert {e.recipient for e in ledger.entries.values()} == {
        "+12125550147@fax.example.com",
        "2125550148@fax.example.com",
    }


async def test_an_envelope_header_outside_every_realm_keys_the_copy_for_all(
    folder: FakeFolder, realm_deps: IntakeDeps, ledger: FakeLedger
) -> None:
    uid = folder.deliver(mail(envelope="+12125550147@elsewhere.example"))
    await take_message(folder, uid, realm_deps)
    (entry,) = ledger.entries.values()
    assert entry.message_key == f"{folder.mailbox}|all|mid:abc@example.com"


async def test_an_oversize_mail_is_never_fetched_whole(
    folder: FakeFolder,
    deps: IntakeDeps,
    ledger: FakeLedger,
    raw_store: FakeRawStore,
    publisher: MemoryPublisher,
) -> None:
    small = dataclasses.replace(deps, max_mail_bytes=1000)
    big = folder.deliver(mail(body="x" * 5000))
    normal = folder.deliver(mail("<next@example.com>"))

    assert await take_message(folder, big, small) is Outcome.oversize
    assert await take_message(folder, normal, small) is Outcome.published

    assert (folder.fetches, folder.header_fetches) == (1, 1)  # the big one: headers only
    oversize, published = publisher.published
    assert oversize.oversize is not None
    assert oversize.oversize.limit == 1000
    assert oversize.oversize.size > 5000
    stored = raw_store.files[oversize.raw.file_id]
    assert stored.endswith(b"Subject: test\r\n\r\n")
    assert published.oversize is None
    assert len(folder.moved[Destination.oversize]) == 1
    assert len(folder.processed) == 1
    entry = ledger.entries[ledger_id(folder.mailbox, 7, big)]
    assert (entry.moved_at is not None, entry.oversize_limit) == (True, 1000)


async def test_a_crash_before_the_move_of_an_oversize_mail_moves_it_to_oversize(
    folder: FakeFolder, deps: IntakeDeps, publisher: MemoryPublisher
) -> None:
    small = dataclasses.replace(deps, max_mail_bytes=1000)
    big = folder.deliver(mail(body="x" * 5000))
    folder.fail_next_move = True
    with pytest.raises(ConnectionError):
        await take_message(folder, big, small)
    assert await take_message(folder, big, small) is Outcome.moved_only
    assert len(folder.moved[Destination.oversize]) == 1
    assert len(publisher.published) == 1


async def test_a_read_that_fails_is_reported_as_that_uids_failure(
    folder: FakeFolder, deps: IntakeDeps
) -> None:
    uid = folder.deliver(mail())
    folder.broken[uid] = TimeoutError("IMAP command timed out after 60s")
    with pytest.raises(FetchFailed) as caught:
        await take_message(folder, uid, deps)
    assert caught.value.uid == uid
    assert "timed out" in str(caught.value)
