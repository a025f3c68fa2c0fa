"""Helpers for the mail-poller's integration tests: Dovecot folders, poller processes."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faxbox.shared.bus import Bus
from faxbox.shared.contracts import MailReceived
from faxbox.shared.settings import BrokerSettings, MongoSettings
from tests.support import ImapServer, free_port

REPO = Path(__file__).resolve().parents[3]


def poller_user(server: ImapServer) -> str:
    """The mail-poller's own test user, so its folders never meet another suite's."""
    return "bob@faxbox.test" if "bob@faxbox.test" in server.users else server.users[-1]


@dataclass
class Imap:
    """Plain imaplib, in a thread: what a sending MTA or a user's client would do."""

    server: ImapServer
    user: str

    def _connect(self) -> imaplib.IMAP4:
        conn = imaplib.IMAP4(self.server.host, self.server.port, timeout=10)
        conn.login(self.user, self.server.password)
        return conn

    def _create(self, folder: str) -> None:
        with self._connect() as conn:
            status, _ = conn.create(folder)
            assert status == "OK"

    def _delete(self, folder: str) -> None:
        with self._connect() as conn:
            conn.delete(folder)

    def _append(self, folder: str, raw: bytes) -> None:
        with self._connect() as conn:
            status, detail = conn.append(folder, None, None, raw)
            assert status == "OK", detail

    def _messages(self, folder: str) -> list[bytes]:
        with self._connect() as conn:
            status, _ = conn.select(folder, readonly=True)
            if status != "OK":
                return []
            status, data = conn.uid("SEARCH", "ALL")
            uids = data[0].split() if data and data[0] else []
            out: list[bytes] = []
            for uid in uids:
                status, fetched = conn.uid("FETCH", uid, "(BODY.PEEK[])")
                item = fetched[0]
                # A poller moving the message away between the SEARCH and this FETCH
                # leaves nothing to fetch: it is in its next folder now, not lost.
                if status == "OK" and isinstance(item, tuple):
                    out.append(item[1])
            return out

    def _move_matching(self, source: str, header: str, value: str, target: str) -> int:
        with self._connect() as conn:
            status, _ = conn.select(source)
            assert status == "OK"
            status, data = conn.uid("SEARCH", "HEADER", header, value)
            uids = data[0].split() if data and data[0] else []
            if uids:
                status, detail = conn.uid("MOVE", b",".join(uids).decode(), target)
                assert status == "OK", detail
            return len(uids)

    async def move_matching(self, source: str, header: str, value: str, target: str) -> int:
        """Move the messages of ``source`` whose ``header`` contains ``value``; how many."""
        return await asyncio.to_thread(self._move_matching, source, header, value, target)

    def _exists(self, folder: str) -> bool:
        with self._connect() as conn:
            status, listed = conn.list('""', folder)
            return status == "OK" and any(entry for entry in listed if entry)

    def _metadata(self, folder: str, key: str) -> str | None:
        # imaplib sends only the commands in its table; RFC 5464's is not among them.
        imaplib.Commands.setdefault("GETMETADATA", ("AUTH", "SELECTED"))
        with self._connect() as conn:
            status, data = conn._simple_command("GETMETADATA", f'"{folder}"', key)
            assert status == "OK", data
            _, data = conn._untagged_response(status, data, "METADATA")
            for item in data:
                # '"folder" (key "value")', or with the value as a literal
                if isinstance(item, tuple):
                    return str(item[1].decode())
                if item and b"NIL" not in item.split(key.encode(), 1)[-1]:
                    return str(item.split(b'"')[-2].decode())
            return None

    async def metadata(self, folder: str, key: str) -> str | None:
        """The folder's metadata ``key`` (RFC 5464 GETMETADATA), None when unset."""
        return await asyncio.to_thread(self._metadata, folder, key)

    async def create(self, folder: str) -> None:
        await asyncio.to_thread(self._create, folder)

    async def delete(self, folder: str) -> None:
        await asyncio.to_thread(self._delete, folder)

    async def append(self, folder: str, raw: bytes) -> None:
        await asyncio.to_thread(self._append, folder, raw)

    async def messages(self, folder: str) -> list[bytes]:
        return await asyncio.to_thread(self._messages, folder)

    async def exists(self, folder: str) -> bool:
        return await asyncio.to_thread(self._exists, folder)


def make_mail(token: str | None = None, message_id: str | None = "auto", body: str = "") -> bytes:
    token = token or uuid.uuid4().hex
    if message_id == "auto":
        message_id = f"<{token}@sender.example>"
    header = f"Message-ID: {message_id}\r\n" if message_id else ""
    return (
        f"From: Alice <alice@example.com>\r\nTo: +12125551234@fax.example.com\r\n"
        f"Subject: {token}\r\n{header}MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain\r\n\r\nfax me {token}\r\n{body}"
    ).encode()


def leaving_folders(folder: str) -> dict[str, str]:
    """The folders mail leaves ``folder`` for, the test's own (flat names)."""
    return {
        "processed_folder": f"{folder}-processed",
        "oversize_folder": f"{folder}-oversize",
        "failed_folder": f"{folder}-failed",
    }


@contextlib.asynccontextmanager
async def own_folder(imap: Imap) -> AsyncIterator[str]:
    """A watched folder of the test's own; the poller creates the ones mail leaves for."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    await imap.create(name)
    try:
        yield name
    finally:
        await imap.delete(name)
        for leaving in leaving_folders(name).values():
            await imap.delete(leaving)


def mailbox_json(server: ImapServer, user: str, folder: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"{user}/{folder}",
        "host": server.host,
        "port": server.port,
        "security": "none",
        "username": user,
        "password": server.password,
        "folder": folder,
        **leaving_folders(folder),
        "command_timeout_s": 10,
        **extra,
    }


@dataclass
class PollerProcess:
    """``python -m faxbox.mail_poller`` with settings in its environment."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    http_port: int = field(default_factory=free_port)

    def start(self) -> PollerProcess:
        env = {**os.environ, **self.env, "FAXBOX_HTTP_PORT": str(self.http_port)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "faxbox.mail_poller"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=REPO,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            assert self.process is not None
            self.process.wait(10)

    def terminate(self, timeout_s: float = 20) -> int:
        assert self.process is not None
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def ready(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/readyz", timeout=2
            ) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read()))
        except OSError:
            return None

    async def until_ready(self, timeout_s: float = 30) -> None:
        await eventually(lambda: (self.ready() or {}).get("ready") is True, timeout_s, "ready")

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.http_port}/metrics", timeout=2
        ) as response:
            body: bytes = response.read()
        return body.decode()

    def post(self, path: str) -> int:
        """POST to the poller's HTTP port; the status code."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        tail: list[str] = text.splitlines()[-lines:]
        return "\n".join(tail)


def poller_env(
    broker: BrokerSettings,
    mongo: MongoSettings,
    mailboxes: list[dict[str, Any]],
    **extra: str,
) -> dict[str, str]:
    return {
        "FAXBOX_AMQP_URL": broker.amqp_url,
        "FAXBOX_EXCHANGE_PREFIX": broker.exchange_prefix,
        "FAXBOX_MONGO_URL": mongo.mongo_url,
        "FAXBOX_MONGO_DB": mongo.mongo_db,
        "FAXBOX_MAIL_POLLER_MAILBOXES": json.dumps(mailboxes),
        "FAXBOX_LOG_LEVEL": "INFO",
        "FAXBOX_SHUTDOWN_GRACE_S": "5",
        "FAXBOX_MAIL_POLLER_RECONNECT_CAP_S": "2",
        **extra,
    }


@contextlib.contextmanager
def pollers() -> Iterator[list[PollerProcess]]:
    """Every poller started in the block is killed at its end, whatever happens."""
    started: list[PollerProcess] = []
    try:
        yield started
    finally:
        for poller in started:
            poller.kill()


class MailInbox:
    """The validator's queue, consumed for real: every MailReceived that reaches it."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.received: list[tuple[float, MailReceived]] = []
        self.arrived = asyncio.Event()
        self._consumer = bus.consumer("validator", {MailReceived: self._on_mail})

    async def _on_mail(self, message: MailReceived) -> None:
        self.received.append((time.monotonic(), message))
        self.arrived.set()

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop(5)

    def about(self, token: str) -> list[MailReceived]:
        """Messages for the mail with this token (its Message-ID or subject)."""
        return [m for _, m in self.received if token in (m.rfc822_message_id or "")]


async def eventually(
    condition: Callable[[], Awaitable[object]] | Callable[[], object],
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
) -> float:
    """Wait until ``condition`` holds; returns the seconds it took."""
    started = time.monotonic()
    while True:
        outcome = condition()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)
