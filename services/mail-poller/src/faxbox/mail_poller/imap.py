"""One IMAP session on an intake folder, through aioimaplib.

aioimaplib has no STARTTLS and does not answer an XOAUTH2 error challenge; both are
done here on top of its protocol object. Every command is raced against the
connection-lost callback and a timeout, so a dead server never hangs the poller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Collection
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

import aioimaplib
from aioimaplib.aioimaplib import (
    AUTH,
    SELECTED,
    STOP_WAIT_SERVER_PUSH,
    Cmd,
    Command,
    Commands,
    Exec,
    Response,
    quoted,
)

from faxbox.mail_poller.auth import TokenSource
from faxbox.mail_poller.config import MailboxConfig
from faxbox.mail_poller.ports import Destination, FetchedMessage
from faxbox.mail_poller.push import PUSH_URL_KEY, PushTarget

log = logging.getLogger(__name__)

T = TypeVar("T")


class ImapError(Exception):
    """The session cannot go on; the watcher reconnects with backoff."""


class AuthFailed(ImapError):
    pass


class ConnectionLost(ImapError):
    pass


class WaitMode(StrEnum):
    idle = "idle"
    poll = "poll"


def choose_wait_mode(capabilities: Collection[str], use_idle: bool) -> WaitMode:
    """IDLE when configured and advertised (RFC 2177), else polling."""
    if use_idle and "IDLE" in {c.upper() for c in capabilities}:
        return WaitMode.idle
    return WaitMode.poll


_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_DELIMITER = re.compile(rb'\)\s+(?:"((?:[^"\\]|\\.)?)"|NIL)\s')
_UID = re.compile(rb"\bUID (\d+)")
_INTERNALDATE = re.compile(rb'INTERNALDATE "([^"]+)"')
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_CHANGE = re.compile(rb"^\d+ (EXISTS|RECENT)\b|^BYE\b", re.IGNORECASE)


def parse_uid_validity(lines: list[Any]) -> int:
    for line in lines:
        if isinstance(line, bytes) and (m := _UIDVALIDITY.search(line)):
            return int(m.group(1))
    raise ImapError("SELECT answered without UIDVALIDITY")


def parse_delimiter(lines: list[Any]) -> str | None:
    for line in lines:
        if isinstance(line, bytes) and (m := _DELIMITER.search(line)):
            raw = m.group(1)  # None for NIL: a flat namespace
            return raw.decode().replace("\\", "") or None if raw is not None else None
    return None


def server_folder_name(logical: str, delimiter: str | None) -> str:
    """Our settings separate levels with '/'; the server may use another delimiter."""
    return logical.replace("/", delimiter) if delimiter else logical


def parse_search(lines: list[Any]) -> list[int]:
    # aioimaplib strips "* SEARCH"; the last line is the tagged status text.
    uids: list[int] = []
    for line in lines[:-1]:
        if isinstance(line, bytes | bytearray):
            uids.extend(int(tok) for tok in bytes(line).split() if tok.isdigit())
    return sorted(set(uids))


def parse_sizes(lines: list[Any]) -> dict[int, int]:
    """UID -> RFC822.SIZE from a UID FETCH answer."""
    sizes: dict[int, int] = {}
    for line in lines:
        if not isinstance(line, bytes) or b"FETCH" not in line:
            continue
        uid_match, size_match = _UID.search(line), _SIZE.search(line)
        if uid_match is not None and size_match is not None:
            sizes[int(uid_match.group(1))] = int(size_match.group(1))
    return sizes


def parse_fetch(lines: list[Any], uid: int, section: bytes = b"BODY[]") -> FetchedMessage | None:
    """The ``section`` literal and INTERNALDATE of ``uid`` in a UID FETCH answer."""
    for index, line in enumerate(lines):
        if not isinstance(line, bytes) or b"FETCH" not in line:
            continue
        uid_match = _UID.search(line)
        if uid_match is None or int(uid_match.group(1)) != uid or section not in line:
            continue
        if index + 1 >= len(lines) or not isinstance(lines[index + 1], bytearray):
            raise ImapError(f"FETCH of UID {uid} without a body literal")
        date_match = _INTERNALDATE.search(line)
        return FetchedMessage(
            uid=uid,
            raw=bytes(lines[index + 1]),
            internal_date=_parse_internaldate(date_match.group(1)) if date_match else None,
        )
    return None


def _parse_internaldate(value: bytes) -> datetime | None:
    try:
        return datetime.strptime(value.decode().strip(), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return None


def push_means_change(lines: list[Any]) -> bool:
    """Whether an IDLE push (EXISTS, RECENT, or the server's BYE) calls for a rescan."""
    return any(isinstance(line, bytes) and _CHANGE.search(line) for line in lines)


def _ssl_context(config: MailboxConfig) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)


class ImapSession:
    """Open with :meth:`open`, close with :meth:`close`; implements ``MailFolder``."""

    def __init__(
        self,
        config: MailboxConfig,
        tokens: TokenSource | None = None,
        push: PushTarget | None = None,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.push = push
        self.push_registered = False
        self._client: aioimaplib.IMAP4 | None = None
        self._lost = asyncio.Event()
        self._change_reported = False
        self._uid_validity = 0
        # RFC822.SIZE of the UIDs the last scan listed (a message's size never changes).
        self._sizes: dict[int, int] = {}
        # Server names of the folders messages leave to (the server's own delimiter).
        self.folders = {
            Destination.processed: config.processed_folder,
            Destination.oversize: config.oversize_folder,
            Destination.failed: config.failed_folder,
        }

    # --- MailFolder ----------------------------------------------------------------------

    @property
    def mailbox(self) -> str:
        return self.config.name

    @property
    def uid_validity(self) -> int:
        return self._uid_validity

    @property
    def connected(self) -> bool:
        return self._client is not None and not self._lost.is_set()

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset(self.client.protocol.capabilities)

    @property
    def client(self) -> aioimaplib.IMAP4:
        if self._client is None:
            raise ImapError("session is not open")
        return self._client

    # --- life --------------------------------------------------------------------------

    async def open(self) -> None:
        config = self.config
        context = _ssl_context(config) if config.security != "none" else None
        self._lost.clear()
        self._client = aioimaplib.IMAP4(
            host=config.host,
            port=config.port,
            timeout=config.command_timeout_s,
            conn_lost_cb=self._on_lost,
            ssl_context=context if config.security == "tls" else None,
        )
        self._observe_untagged(self._client.protocol)
        try:
            await self._client.wait_hello_from_server()
        except ssl.SSLError as exc:
            raise ImapError(f"TLS with {config.host}:{config.port} failed: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            raise ConnectionLost(f"cannot reach {config.host}:{config.port}: {exc}") from exc
        if config.security == "starttls":
            assert context is not None
            await self._starttls(context)
        await self._authenticate()
        await self._cmd(self.client.protocol.capability())
        delimiter = parse_delimiter((await self._ok(self.client.list('""', '""'))).lines)
        for destination, logical in (
            (Destination.processed, config.processed_folder),
            (Destination.oversize, config.oversize_folder),
            (Destination.failed, config.failed_folder),
        ):
            self.folders[destination] = server_folder_name(logical, delimiter)
            await self._ensure_folder(self.folders[destination])
        selected = await self._ok(self.client.select(quoted(config.folder)))
        self._uid_validity = parse_uid_validity(selected.lines)
        if self.push is not None and "METADATA" in self.capabilities:
            await self._register_push(self.push.url)

    async def _set_folder_metadata(self, key: str, value: str | None) -> bool:
        # aioimaplib runs only the commands in its table; RFC 5464's is not among them.
        Commands.setdefault("SETMETADATA", Cmd("SETMETADATA", (AUTH, SELECTED), Exec.is_sync))
        protocol = self.client.protocol
        entry = f"({key} {'NIL' if value is None else quoted(value)})"
        response = await self._cmd(
            protocol.execute(
                Command(
                    "SETMETADATA",
                    protocol.new_tag(),
                    quoted(self.config.folder),
                    entry,
                    loop=protocol.loop,
                )
            )
        )
        return bool(response.result == "OK")

    async def _register_push(self, url: str) -> None:
        # Without it the folder is still watched by IDLE, only half a second slower.
        self.push_registered = await self._set_folder_metadata(PUSH_URL_KEY, url)
        log.info(
            "push %s",
            "registered" if self.push_registered else "refused by the server; IDLE only",
            extra={"mailbox": self.mailbox, "url": url},
        )

    async def close(self, unregister_push: bool = False) -> None:
        """Log out; ``unregister_push`` also removes our push URL from the folder.

        Only while this replica still holds the mailbox: a successor's URL must stay.
        """
        client = self._client
        if client is None:
            return
        if unregister_push and self.push_registered and not self._lost.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._set_folder_metadata(PUSH_URL_KEY, None), 5)
            self.push_registered = False
        self._client = None
        if not self._lost.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.logout(), 5)
        transport = client.protocol.transport
        if transport is not None:
            transport.close()

    def _observe_untagged(self, protocol: Any) -> None:
        """Note every EXISTS/RECENT the server sends, whatever command it comes with.

        A server announces new mail once, at the end of whatever command runs when the
        mail arrives (a FETCH, a MOVE, the SEARCH itself); aioimaplib drops such
        untagged lines outside IDLE. Seen, they end the next wait at once, so the mail
        is not left until the next IDLE refresh.
        """
        handle = protocol._untagged_response

        def observed(line: bytes) -> Any:
            if push_means_change([line.removeprefix(b"* ")]):
                self._change_reported = True
            return handle(line)

        protocol._untagged_response = observed

    def _on_lost(self, exc: Exception | None) -> None:
        self._lost.set()

    async def _starttls(self, context: ssl.SSLContext) -> None:
        protocol = self.client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapError(f"{self.config.host} does not offer STARTTLS")
        response = await self._cmd(
            protocol.execute(Command("STARTTLS", protocol.new_tag(), loop=protocol.loop))
        )
        if response.result != "OK":
            raise ImapError(f"STARTTLS refused: {response.lines!r}")
        loop = asyncio.get_running_loop()
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(
                    protocol.transport, protocol, context, server_hostname=self.config.host
                ),
                self.config.command_timeout_s,
            )
        except ssl.SSLError as exc:
            raise ImapError(f"STARTTLS with {self.config.host} failed: {exc}") from exc
        protocol.transport = transport
        # Capabilities before TLS cannot be trusted (RFC 3501 6.2.1): ask again.
        await self._cmd(protocol.capability())

    async def _authenticate(self) -> None:
        config = self.config
        if config.auth == "login":
            password = await asyncio.to_thread(config.password_value)
            response = await self._cmd(self.client.login(config.username, password))
            if response.result != "OK":
                raise AuthFailed(f"LOGIN refused for {config.username}")
            return
        assert self.tokens is not None
        token = await self.tokens.get()
        answer = asyncio.ensure_future(self.client.xoauth2(config.username, token))
        try:
            response = await self._cmd(self._answer_sasl_challenge(answer))
        except TimeoutError:
            self.tokens.invalidate()
            raise AuthFailed(f"XOAUTH2 for {config.username} timed out") from None
        if response.result != "OK":
            # Usually an expired or revoked token: read a fresh one before the next login.
            self.tokens.invalidate()
            raise AuthFailed(f"XOAUTH2 refused for {config.username}")

    async def _answer_sasl_challenge(self, answer: asyncio.Future[Response]) -> Response:
        # On failure Gmail and Microsoft send a "+ <base64 JSON>" challenge and wait for
        # an empty line before the tagged NO; aioimaplib never sends it.
        protocol = self.client.protocol
        answered = False
        while not answer.done():
            pending = protocol.pending_sync_command
            if (
                not answered
                and pending is not None
                and pending.name == "AUTHENTICATE"
                and pending.response.lines
            ):
                protocol.send("")
                answered = True
            await asyncio.wait({answer}, timeout=0.05)
        return answer.result()

    async def _ensure_folder(self, name: str) -> None:
        listed = await self._ok(self.client.list('""', quoted(name)))
        if any(isinstance(line, bytes) and line.startswith(b"(") for line in listed.lines):
            return
        created = await self._cmd(self.client.create(quoted(name)))
        if created.result != "OK" and not any(
            b"ALREADYEXISTS" in bytes(line) for line in created.lines
        ):
            raise ImapError(f"cannot create folder {name!r}: {created.lines!r}")
        log.info("created folder", extra={"mailbox": self.mailbox, "folder": name})

    # --- commands ----------------------------------------------------------------------

    async def _cmd(self, operation: Awaitable[T]) -> T:
        """Run one command; a lost connection or the timeout ends it with an error."""
        task = asyncio.ensure_future(operation)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait(
                {task, lost},
                timeout=self.config.command_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            lost.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        if lost in done:
            raise ConnectionLost(f"connection to {self.config.host} lost")
        self._lost.set()  # the protocol state is unknown after a timeout: start over
        raise TimeoutError(f"IMAP command timed out after {self.config.command_timeout_s}s")

    async def _ok(self, operation: Awaitable[Response]) -> Response:
        response = await self._cmd(operation)
        if response.result != "OK":
            raise ImapError(f"IMAP command failed: {response.result} {response.lines!r}")
        return response

    async def search_all(self) -> list[int]:
        """Every UID in the folder, with its size noted: one command for both, so reading
        the size before each fetch costs no round trip of its own."""
        # Whatever was announced (or pushed) before this command, it sees.
        self._change_reported = False
        if self.push is not None:
            self.push.arrived.clear()
        listed = await self._cmd(self.client.uid("fetch", "1:*", "(UID RFC822.SIZE)"))
        if listed.result == "OK":
            self._sizes = parse_sizes(listed.lines)
            return sorted(self._sizes)
        # A server that refuses 1:* on an empty folder: plain SEARCH, sizes one by one.
        self._sizes = {}
        response = await self._ok(self.client.uid_search("ALL", charset=None))
        return parse_search(response.lines)

    async def size(self, uid: int) -> int | None:
        if uid in self._sizes:
            return self._sizes[uid]
        response = await self._ok(self.client.uid("fetch", str(uid), "(UID RFC822.SIZE)"))
        return parse_sizes(response.lines).get(uid)

    async def fetch(self, uid: int) -> FetchedMessage | None:
        # BODY.PEEK[]: reading must not change the message's flags.
        response = await self._ok(
            self.client.uid("fetch", str(uid), "(UID INTERNALDATE BODY.PEEK[])")
        )
        return parse_fetch(response.lines, uid)

    async def fetch_header(self, uid: int, max_bytes: int) -> FetchedMessage | None:
        # A partial fetch (RFC 3501 6.4.5): the server sends at most max_bytes of it.
        response = await self._ok(
            self.client.uid(
                "fetch", str(uid), f"(UID INTERNALDATE BODY.PEEK[HEADER]<0.{max_bytes}>)"
            )
        )
        return parse_fetch(response.lines, uid, b"BODY[HEADER]")

    async def move(self, uid: int, to: Destination) -> None:
        client, target, ids = self.client, quoted(self.folders[to]), str(uid)
        if "MOVE" in self.capabilities:
            await self._ok(client.uid("move", ids, target))
            return
        await self._ok(client.uid("copy", ids, target))
        await self._ok(client.uid("store", ids, "+FLAGS.SILENT", r"(\Deleted)"))
        if "UIDPLUS" in self.capabilities:
            await self._ok(client.uid("expunge", ids))
        else:
            # Without UIDPLUS a plain EXPUNGE is all there is; it also removes other
            # messages someone flagged \Deleted in this intake folder.
            await self._ok(client.expunge())

    async def wait_for_change(self, timeout_s: float, interrupt: asyncio.Event) -> None:
        """IDLE until the folder changes (announced or pushed), ``timeout_s`` passes or
        ``interrupt`` is set."""
        if self._change_reported or (self.push is not None and self.push.arrived.is_set()):
            self._change_reported = False
            return
        client = self.client
        queue = client.protocol.idle_queue
        while not queue.empty():  # a stale wake-up from an earlier IDLE
            queue.get_nowait()
        try:
            idle = await self._cmd(client.idle_start(timeout=timeout_s))
        except aioimaplib.Abort as exc:
            raise ImapError(f"IDLE refused: {exc}") from exc
        try:
            while True:
                announced = asyncio.ensure_future(queue.get())
                stop = asyncio.ensure_future(interrupt.wait())
                lost = asyncio.ensure_future(self._lost.wait())
                waits = {announced, stop, lost}
                if self.push is not None:
                    waits.add(asyncio.ensure_future(self.push.arrived.wait()))
                done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                if announced in done:
                    lines = announced.result()
                    if lines is STOP_WAIT_SERVER_PUSH or lines == STOP_WAIT_SERVER_PUSH:
                        return
                    if any(isinstance(x, bytes) and x.upper().startswith(b"BYE") for x in lines):
                        raise ConnectionLost(f"{self.config.host} said BYE")
                    if push_means_change(lines):
                        return
                    continue
                if lost in done:
                    raise ConnectionLost(f"connection to {self.config.host} lost during IDLE")
                return
        finally:
            if not self._lost.is_set() and client.has_pending_idle():
                client.idle_done()
                with contextlib.suppress(Exception):
                    await self._cmd(idle)
