"""The mail-poller as a process against real Dovecot, RabbitMQ and FerretDB."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faxbox.mail_poller.keys import ledger_id
from faxbox.mail_poller.lease import MailboxLease
from faxbox.mail_poller.ledger import COLLECTION as LEDGER
from faxbox.mail_poller.push import PUSH_URL_KEY
from faxbox.shared.bus import ERROR_KIND_HEADER, REASON_HEADER, Bus
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Store
from tests.integration.mail_poller.mail_poller_stall import Stall, stalling_proxy
from tests.integration.mail_poller.mail_poller_support import (
    REPO,
    Imap,
    MailInbox,
    PollerProcess,
    eventually,
    mailbox_json,
    make_mail,
    own_folder,
    poller_env,
    poller_user,
    pollers,
)
from tests.support import ImapServer

pytestmark = pytest.mark.integration


@pytest.fixture
def imap(imap_server: ImapServer) -> Imap:
    return Imap(imap_server, poller_user(imap_server))


@pytest.fixture
async def folder(imap: Imap) -> AsyncIterator[str]:
    """A watched folder of this test's own; the poller creates the ones mail leaves for."""
    async with own_folder(imap) as name:
        yield name


@pytest.fixture
async def inbox(broker_settings: BrokerSettings) -> AsyncIterator[MailInbox]:
    bus = Bus(broker_settings)
    await bus.connect()
    inbox = MailInbox(bus)
    await inbox.start()
    try:
        yield inbox
    finally:
        await inbox.stop()
        await bus.close()


def _poller(
    tmp_path: Path,
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    imap_server: ImapServer,
    imap: Imap,
    folder: str,
    **extra: str,
) -> PollerProcess:
    env = poller_env(
        broker_settings,
        mongo_settings,
        [mailbox_json(imap_server, imap.user, folder)],
        **extra,
    )
    return PollerProcess(env, tmp_path / f"poller-{uuid.uuid4().hex[:6]}.log")


async def _moved(imap: Imap, folder: str, count: int) -> bool:
    return (
        len(await imap.messages(f"{folder}-processed")) == count
        and len(await imap.messages(folder)) == 0
    )


async def test_append_is_stored_published_and_then_moved(
    tmp_path: Path,
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    store: Store,
    imap_server: ImapServer,
    imap: Imap,
    folder: str,
    inbox: MailInbox,
) -> None:
    token = uuid.uuid4().hex
    raw = make_mail(token, body="x" * 300_000)  # more than one GridFS chunk
    with pollers() as started:
        poller = _poller(
            tmp_path, broker_settings, mongo_settings, imap_server, imap, folder
        ).start()
        started.append(poller)
        await poller.until_ready()
        assert await imap.exists(f"{folder}-processed"), "processed folder not created"

        await imap.append(folder, raw)
        await eventually(lambda: inbox.about(token), 20, "MailReceived")
        await eventually(lambda: _moved(imap, folder, 1), 20, "the move")

        [message] = inbox.about(token)
        assert message.mailbox == f"{imap.user}/{folder}"
        assert message.rfc822_message_id == f"<{token}@sender.example>"
        assert message.raw.account_id == "intake"
        assert message.raw.content_type == "message/rfc822"
        stored = await store.documents.get(message.raw)
        assert stored == raw
        assert message.raw.sha256 == hashlib.sha256(raw).hexdigest()
        assert (await imap.messages(f"{folder}-processed"))[0] == raw

        entry = await store.db[LEDGER].find_one(
            {"_id": ledger_id(message.mailbox, message.uid_validity, message.uid)}
        )
        assert entry is not None
        assert entry["moved_at"] is not None
        assert (entry["fax_id"], entry["message_id"]) == (message.fax_id, message.message_id)

        ready = poller.ready()
        assert ready is not None
        assert ready["checks"] == {
            "broker": True,
            "database": True,
            f"imap {message.mailbox}": True,
        }
        metrics = poller.metrics()
        assert "faxbox_mail_poller_messages_taken_total" in metrics
        assert 'outcome="published"' in metrics
        assert "faxbox_mail_poller_intake_latency_seconds_count 1.0" in metrics
        assert poller.terminate() == 0, poller.log_tail()


async def test_dovecot_push_wakes_the_poller_and_is_withdrawn_at_stop(
    tmp_path: Path,
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    imap_server: ImapServer,
    imap: Imap,
    folder: str,
    inbox: MailInbox,
) -> None:
    with pollers() as started:
        poller = _poller(
            tmp_path,
            broker_settings,
            mongo_settings,
            imap_server,
            imap,
            folder,
            FAXBOX_MAIL_POLLER_IMAP_PUSH_HOST="127.0.0.1",
        ).start()
        started.append(poller)
        await poller.until_ready()
        url = await imap.metadata(folder, PUSH_URL_KEY)
        assert url is not None, poller.log_tail()
        assert url.startswith(f"http://127.0.0.1:{poller.http_port}/imap-push/"), url

        # Dovecot POSTs to the URL when the APPEND commits (deploy/dovecot/faxbox-push.lua)
        for n in range(3):
            token = uuid.uuid4().hex
            await imap.append(folder, make_mail(token))
            await eventually(lambda t=token: inbox.about(t), 20, f"MailReceived {n}")
        mailbox = f"{imap.user}/{folder}"
        pushes = re.search(
            r'^faxbox_mail_poller_pushes_total\{mailbox="' + re.escape(mailbox) + r'"\} (\S+)$',
            poller.metrics(),
            re.M,
        )
        assert pushes is not None, poller.metrics()
        assert float(pushes.group(1)) >= 3
        # A guessed path wakes nothing.
        assert poller.post("/imap-push/guess") == 404

        assert poller.terminate() == 0, poller.log_tail()
        assert await imap.metadata(folder, PUSH_URL_KEY) is None


async def test_a_burst_of_mail_is_taken_at_once(
    tmp_path: Path,
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    store: Store,
    imap_server: ImapServer,
    imap: Imap,
    folder: str,
    inbox: MailInbox,
) -> None:
    """Mails that land while others are taken are announced during those commands,
    never in the IDLE that follows; they must not wait for the IDLE refresh (minutes)."""
    tokens = [uuid.uuid4().hex for _ in range(30)]
    with pollers() as started:
        poller = _poller(
            tmp_path, broker_settings, mongo_settings, imap_server, imap, folder
        ).start()
        started.append(poller)
        await poller.until_ready()
        for token in tokens:
            await imap.append(folder, make_mail(token))
        await eventually(lambda: all(inbox.about(t) for t in tokens), 15, "every MailReceived")
        await eventually(lambda: _moved(imap, folder, len(tokens)), 15, "every move")
        assert poller.terminate() == 0, poller.log_tail()


async def test_crash_between_publish_and_move_publishes_exactly_once(
    tmp_path: Path,
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    store: Store,
    imap_server: ImapServer,
    imap: Imap,
    folder: str,
    inbox: MailInbox,
) -> None:
    token = uuid.uuid4().hex
    with pollers() as started:
        crashing = _poller(
            tmp_path,
            broker_settings,
            mongo_settings,
            imap_server,
            imap,
            folder,
            FAXBOX_TEST_CRASH_AT="mail-poller.after_publish",
        ).start()
        started.append(crashing)
        await imap.append(folder, make_mail(token))
        await eventually(lambda: not crashing.alive(), 30, "the crash after the publish")
        assert crashing.process is not None
        assert crashing.process.returncode == 137, crashing.log_tail()
        # Published, not moved: the mail is still in the watched folder.
        assert len(inbox.about(token)) == 1
        assert len(await imap.messages(folder)) == 1

        restarted = _poller(
            tmp_path, broker_settings, mongo_settings, imap_server, imap, folder
        ).start()
        started.append(restarted)
        await eventually(lambda: _moved(imap, folder, 1), 30, "the move after the restart")
        await asyncio.sleep(2)  # time for a second publish to show up, if there were one
        [message] = inbox.about(token)
        entry = await store.db[LEDGER].find_one(
            {"_id": ledger_id(message.mailbox, message.uid_validity, message.uid)}
        )
        assert entry is not None
        assert entry["moved_at"] is not None
        assert restarted.terminate() == 0, restarted.log_tail()


async def test_same_message_id_twice_is_published_once(
    tmp_path: Path,
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    store: Store,
    imap_server: ImapServer,
    imap: Imap,
    folder: str,
    inbox: MailInbox,
) -> None:
    token = uuid.uuid4().hex
    no_id_a, no_id_b = make_mail(message_id=None), make_mail(message_id=None)
    with pollers() as started:
        poller = _poller(
            tmp_path, broker_settings, mongo_settings, imap_server, imap, folder
        ).start()
        started.append(poller)
        await imap.append(folder, make_mail(token))
        await eventually(lambda: _moved(imap, folder, 1), 30, "the first copy moved")
        # The MTA resends the same mail (other Received headers, same Message-ID).
        await imap.append(folder, b"Received: from relay2\r\n" + make_mail(token))
        await imap.append(folder, no_id_a)
        await imap.append(folder, no_id_b)
        await imap.append(folder, no_id_a)  # the same bytes again, no Message-ID
        await eventually(lambda: _moved(imap, folder, 5), 30, "every copy moved")
        await asyncio.sleep(1)

        assert len(inbox.about(token)) == 1
        without_id = [m for _, m in inbox.received if m.rfc822_message_id is None]
        assert len(without_id) == 2
        states = [
            "moved" if doc["moved_at"] else "in the folder"
            async for doc in store.db[LEDGER].find({"mailbox": f"{imap.user}/{folder}"})
        ]
        assert sorted(states) == ["moved"] * 5
        duplicates = await store.db[LEDGER].count_documents(
            {"mailbox": f"{imap.user}/{folder}", "duplicate_of": {"$ne": None}}
        )
        assert duplicates == 2
        assert poller.terminate() == 0, poller.log_tail()


def _dovecot_master_pid_file() -> Path:
    # Same rule as deploy/local/lib.sh: base_dir is var/run/dovecot unless that path is
    # too long for unix sockets.
    base = REPO / "var" / "run" / "dovecot"
    if len(str(base)) > 60:
        digest = hashlib.md5(str(REPO).encode()).hexdigest()[:12]
        base = Path(f"/run/faxbox-dovecot-{digest}")
    return base / "master.pid"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid …; comm may hold spaces, so split after the ')'.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


async def _restart_dovecot() -> None:
    pid = int(_dovecot_master_pid_file().read_text().strip())
    children = _children(pid)
    os.kill(pid, signal.SIGTERM)
    await eventually(lambda: not Path(f"/proc/{pid}").exists(), 20, "dovecot to stop")
    # Dovecot 2.3 leaves running imap sessions behind when its master stops; a real
    # server restart (or crash, or failover) takes them down, so end them too.
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    # The step of deploy/local/up that starts Dovecot; the shared RabbitMQ and FerretDB
    # (and the shared .venv) are left alone.
    result = await asyncio.to_thread(
        subprocess.run,
        ["bash", str(REPO / "deploy" / "local" / "dovecot.sh")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_reconnects_after_a_dovecot_restart_mid_idle(
    tmp_path: Path,
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    imap_server: ImapServer,
    imap: Imap,
    folder: str,
    inbox: MailInbox,
) -> None:
    before, after = uuid.uuid4().hex, uuid.uuid4().hex
    with pollers() as started:
        poller = _poller(
            tmp_path, broker_settings, mongo_settings, imap_server, imap, folder
        ).start()
        started.append(poller)
        await imap.append(folder, make_mail(before))
        await eventually(lambda: _moved(imap, folder, 1), 30, "the first mail")
        await asyncio.sleep(1)  # idling now

        await _restart_dovecot()
        await imap.append(folder, make_mail(after))
        await eventually(lambda: inbox.about(after), 60, "the mail appended after the restart")
        await eventually(lambda: _moved(imap, folder, 2), 30, "its move")

        assert poller.alive()
        assert "IMAP session ended" in poller.log_path.read_text()
        assert len(inbox.about(before)) == 1
        assert len(inbox.about(after)) == 1
        assert poller.terminate() == 0, poller.log_tail()


async def _holder(store: Store, mailbox: str) -> str | None:
    return await MailboxLease(store.db, mailbox, "observer", 1).current_holder()


async def test_standby_takes_over_within_15_s_of_a_sigkill(
    tmp_path: Path,
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    store: Store,
    imap_server: ImapServer,
    imap: Imap,
    folder: str,
    inbox: MailInbox,
) -> None:
    mailbox = f"{imap.user}/{folder}"
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    with pollers() as started:
        replicas = {}
        for name in ("replica-a", "replica-b"):
            replicas[name] = _poller(
                tmp_path,
                broker_settings,
                mongo_settings,
                imap_server,
                imap,
                folder,
                FAXBOX_MAIL_POLLER_REPLICA_ID=name,
            ).start()
            started.append(replicas[name])
        await eventually(lambda: _holder(store, mailbox), 30, "a lease holder")
        active_name = await _holder(store, mailbox)
        assert active_name in replicas
        standby_name = next(n for n in replicas if n != active_name)
        await imap.append(folder, make_mail(first))
        await eventually(lambda: _moved(imap, folder, 1), 30, "the first mail")

        killed_at = time.monotonic()
        replicas[active_name].kill()
        await imap.append(folder, make_mail(second))
        await eventually(
            lambda: _holder_is(store, mailbox, standby_name), 20, "the standby to take the lease"
        )
        takeover_s = time.monotonic() - killed_at
        await eventually(lambda: inbox.about(second), 20, "the mail sent after the kill")
        handled_s = time.monotonic() - killed_at
        print(
            f"lease takeover {takeover_s:.2f} s, new mail published {handled_s:.2f} s after SIGKILL"
        )
        assert takeover_s <= 15
        assert handled_s <= 15
        await eventually(lambda: _moved(imap, folder, 2), 20, "the move")
        assert len(inbox.about(first)) == 1
        assert len(inbox.about(second)) == 1

        # A graceful stop hands the lease back at once: no need to wait for the TTL.
        survivor = replicas[standby_name]
        assert survivor.terminate() == 0, survivor.log_tail()
        assert await MailboxLease(store.db, mailbox, "observer", 1).lease.current() is not None
        assert await _holder(store, mailbox) is None


async def _holder_is(store: Store, mailbox: str, name: str) -> bool:
    return await _holder(store, mailbox) == name


def _big_mail(token: str, size: int) -> bytes:
    """A mail with an attachment of ``size`` zero bytes (base64 of zeros: a long run of
    one line repeated, cheap to build and for Dovecot to store)."""
    line = b"A" * 76 + b"\r\n"
    body = line * (size * 4 // 3 // len(line) + 1)
    return (
        (
            f"From: Alice <alice@example.com>\r\nTo: +12125551234@fax.example.com\r\n"
            f"Subject: {token}\r\nMessage-ID: <{token}@sender.example>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            'Content-Disposition: attachment; filename="scan.pdf"\r\n\r\n'
        ).encode()
        + body
        + b"--b--\r\n"
    )


async def test_an_oversize_mail_is_set_aside_unread_and_the_next_flows(
    tmp_path: Path,
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    store: Store,
    imap_server: ImapServer,
    imap: Imap,
    folder: str,
    inbox: MailInbox,
) -> None:
    big_token, next_token = uuid.uuid4().hex, uuid.uuid4().hex
    big = _big_mail(big_token, 31 * 1024 * 1024)  # over the default cap of 30 MB
    seen = Stall(uid=None)  # a relay that only notes what the poller asks the server
    async with stalling_proxy(imap_server.host, imap_server.port, seen) as port:
        mailbox = mailbox_json(imap_server, imap.user, folder, port=port)
        env = poller_env(
            broker_settings,
            mongo_settings,
            [mailbox],
            FAXBOX_MAIL_POLLER_IMAP_PUSH_HOST="127.0.0.1",
        )
        with pollers() as started:
            poller = PollerProcess(env, tmp_path / "oversize.log").start()
            started.append(poller)
            await poller.until_ready()
            await imap.append(folder, big)
            await imap.append(folder, make_mail(next_token))
            appended = time.monotonic()
            await eventually(lambda: inbox.about(next_token), 10, "the mail after the big one")
            (arrived,) = [t for t, m in inbox.received if m in inbox.about(next_token)]
            assert arrived - appended < 1.0, f"published {arrived - appended:.2f} s after APPEND"

            await eventually(lambda: inbox.about(big_token), 10, "the big mail's headers")
            (message,) = inbox.about(big_token)
            assert message.oversize is not None
            assert (message.oversize.limit, message.oversize.size) == (30 * 1024 * 1024, len(big))
            stored = await store.documents.get(message.raw)
            assert stored == big[: big.index(b"\r\n\r\n") + 4]  # its header block, no more
            await eventually(
                lambda: _count(imap, f"{folder}-oversize", 1), 20, "the big one set aside"
            )
            await eventually(lambda: _moved(imap, folder, 1), 20, "the next one processed")
            assert 'outcome="oversize"' in poller.metrics()
            assert poller.terminate() == 0, poller.log_tail()
    # The big one's body was never asked for: its header block only, the next one whole.
    reads = [c for c in seen.commands if b"BODY.PEEK[" in c.upper()]
    assert [b"BODY.PEEK[HEADER]<0.262144>" in c for c in reads] == [True, False], reads


async def _count(imap: Imap, folder: str, count: int) -> bool:
    return len(await imap.messages(folder)) == count


async def test_a_uid_that_never_answers_is_set_aside_and_the_next_taken(
    tmp_path: Path,
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    imap_server: ImapServer,
    imap: Imap,
    folder: str,
    inbox: MailInbox,
) -> None:
    stuck_token, next_token, later_token = (uuid.uuid4().hex for _ in range(3))
    await imap.append(folder, make_mail(stuck_token))  # UID 1 of the new folder
    await imap.append(folder, make_mail(next_token))
    stall = Stall(uid=1)
    async with stalling_proxy(imap_server.host, imap_server.port, stall) as port:
        mailbox = mailbox_json(imap_server, imap.user, folder, port=port, command_timeout_s=1.5)
        env = poller_env(
            broker_settings,
            mongo_settings,
            [mailbox],
            FAXBOX_MAIL_POLLER_FETCH_ATTEMPTS="3",
            FAXBOX_MAIL_POLLER_FETCH_RETRY_BASE_S="0.2",
            FAXBOX_MAIL_POLLER_RECONNECT_BASE_S="0.1",
        )
        with pollers() as started:
            poller = PollerProcess(env, tmp_path / "stalled.log").start()
            started.append(poller)
            await eventually(lambda: inbox.about(next_token), 20, "the mail behind the stuck one")
            assert not inbox.about(stuck_token)
            await eventually(
                lambda: _count(imap, f"{folder}-failed", 1), 40, "the stuck one set aside"
            )
            assert len(stall.swallowed) == 3
            await imap.append(folder, make_mail(later_token))
            await eventually(lambda: inbox.about(later_token), 20, "the folder flowing on")
            assert not inbox.about(stuck_token)
            assert poller.terminate() == 0, poller.log_tail()

    bus = Bus(broker_settings)
    await bus.connect()
    try:
        channel = await bus.connection.channel()
        queue = await channel.get_queue(bus.topology.dead_letter_queue("mail-poller"))
        incoming = await queue.get(no_ack=True, fail=False)
        assert incoming is not None, "no dead-letter record"
        record = json.loads(incoming.body)
        assert (record["uid"], record["attempts"]) == (1, 3)
        assert record["moved_to"] == f"{folder}-failed"
        headers = incoming.headers or {}
        assert headers[ERROR_KIND_HEADER] == "fetch_failed"
        assert "could not be read in 3 tries" in str(headers[REASON_HEADER])
        await channel.close()
    finally:
        await bus.close()
