"""SIP over TCP and TLS (RFC 3261 §18): connections, framing, reuse, keep-alive.

A ``StreamTransport`` listens (when it has a port to listen on) and connects out. Each
connection is read as a stream of messages framed by Content-Length; a message goes to
``on_message`` with the hop of its connection, so a response is written back on the
connection its request came in on (§18.2.2), and a carrier that sends us calls over the
connection we registered on reaches us behind NAT. Connections are keyed by the peer's
address and reused both ways; a connection to a peer is opened on first use, and what is
sent while it opens waits for it. A failed connect is reported to ``on_failure`` (the
transaction layer turns it into a 503 at once, RFC 3261 §8.1.3.1, instead of a 32 s
timeout).

RFC 5626 keep-alive: a double CRLF from the peer is answered with one CRLF;
``keepalive_s`` sends our own pings on connections we opened, which keeps NAT bindings
and the registrar's connection alive.

TLS: ``TlsSettings`` — the peer's certificate is verified by default against the
system's CA store or ``ca_file``, and its name against the host we dialled (the name a
DNS lookup started from, not the address it gave). A listener needs a certificate and key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from faxbox.fax.sip.transport import TLS, FailureHandler, Hop, MessageHandler

log = logging.getLogger("faxbox.fax.sip.stream")

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 256 * 1024
CONNECT_TIMEOUT_S = 10.0
_LENGTH = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", re.IGNORECASE | re.MULTILINE
)


class FramingError(ValueError):
    """The byte stream does not hold a SIP message we can frame."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Certificates for SIP over TLS. ``verify`` is on unless turned off explicitly."""

    verify: bool = True
    ca_file: Path | None = None  # None: the system's CA store
    cert_file: Path | None = None  # ours, for listening (and a client certificate)
    key_file: Path | None = None

    def client_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.verify:
            if self.ca_file is not None:
                context.load_verify_locations(cafile=str(self.ca_file))
            else:
                context.load_default_certs()
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file or self.cert_file))
        return context

    def server_context(self) -> ssl.SSLContext | None:
        if self.cert_file is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert_file), str(self.key_file or self.cert_file))
        return context


def split_message(buffer: bytearray) -> bytes | None:
    """Take one message (or a keep-alive CRLF pair, returned as b"\\r\\n\\r\\n") off the
    front of ``buffer``; None when more bytes are needed."""
    start = 0
    while buffer[start : start + 2] == b"\r\n":
        start += 2
    if start:
        if start >= 4 and buffer[:4] == b"\r\n\r\n":
            del buffer[:4]
            return b"\r\n\r\n"
        if start == len(buffer):
            return None  # a lone CRLF (a pong), or the start of a ping
        del buffer[:start]
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEADER_BYTES:
            raise FramingError("header section too long")
        return None
    head = bytes(buffer[:end])
    match = _LENGTH.search(head)
    length = int(match.group(1)) if match else 0
    if length > MAX_BODY_BYTES:
        raise FramingError(f"Content-Length {length} too large")
    total = end + 4 + length
    if len(buffer) < total:
        return None
    message = bytes(buffer[:total])
    del buffer[:total]
    return message


class _Connection:
    def __init__(
        self,
        owner: StreamTransport,
        hop: Hop,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        outgoing: bool,
    ) -> None:
        self.owner = owner
        self.hop = hop
        self.reader = reader
        self.writer = writer
        self.outgoing = outgoing
        self.task = asyncio.create_task(self._read())
        self.pinger: asyncio.Task[None] | None = None
        if outgoing and owner.keepalive_s > 0:
            self.pinger = asyncio.create_task(self._ping(owner.keepalive_s))

    def write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def _read(self) -> None:
        buffer = bytearray()
        try:
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                buffer += chunk
                while (message := split_message(buffer)) is not None:
                    if message == b"\r\n\r\n":
                        self.write(b"\r\n")  # RFC 5626 §4.4.1 pong
                    else:
                        self.owner.on_message(message, self.hop)
        except FramingError as exc:
            log.info("closing %s: %s", self.hop, exc)
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            log.debug("connection %s ended: %r", self.hop, exc)
        finally:
            self.close()

    async def _ping(self, interval: float) -> None:
        while not self.writer.is_closing():
            await asyncio.sleep(interval)
            self.write(b"\r\n\r\n")

    def close(self) -> None:
        self.owner.forget(self)
        if self.pinger is not None:
            self.pinger.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()
        if asyncio.current_task() is not self.task:
            self.task.cancel()


WILDCARDS = frozenset({"", "0.0.0.0", "::"})


class StreamTransport:
    """SIP over TCP (``tls`` None) or TLS: one listener, connections both ways."""

    def __init__(
        self,
        name: str,
        host: str,
        on_message: MessageHandler,
        *,
        tls: TlsSettings | None = None,
        on_failure: FailureHandler | None = None,
        keepalive_s: float = 0.0,
    ) -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.on_message = on_message
        self.on_failure = on_failure
        self.keepalive_s = keepalive_s
        self.tls = tls if tls is not None else (TlsSettings() if name == TLS else None)
        self._client_context = self.tls.client_context() if self.tls is not None else None
        self._server: asyncio.Server | None = None
        self._connections: dict[tuple[str, int], _Connection] = {}
        self._pending: dict[tuple[str, int], list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    async def open(
        cls,
        name: str,
        host: str,
        port: int | None,
        on_message: MessageHandler,
        **options: object,
    ) -> StreamTransport:
        """A transport listening on host:port (0: any free port; None: connect out only)."""
        transport = cls(name, host, on_message, **options)  # type: ignore[arg-type]
        if port is not None:
            context = transport.tls.server_context() if transport.tls is not None else None
            if name == TLS and context is None:
                raise ValueError("a TLS listener needs a certificate (TlsSettings.cert_file)")
            transport._server = await asyncio.start_server(
                transport._accepted, host, port, ssl=context, limit=MAX_HEADER_BYTES
            )
            transport.port = int(transport._server.sockets[0].getsockname()[1])
        return transport

    @property
    def is_open(self) -> bool:
        return not self._closed

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        hop = Hop(self.name, str(peer[0]), int(peer[1]))
        if self._closed:
            writer.close()
            return
        old = self._connections.get(hop.address)
        if old is not None:
            old.close()
        self._connections[hop.address] = _Connection(self, hop, reader, writer, outgoing=False)

    def forget(self, connection: _Connection) -> None:
        if self._connections.get(connection.hop.address) is connection:
            del self._connections[connection.hop.address]

    def send(self, data: bytes, hop: Hop) -> None:
        if self._closed:
            return
        connection = self._connections.get(hop.address)
        if connection is not None:
            connection.write(data)
            return
        waiting = self._pending.get(hop.address)
        if waiting is not None:
            waiting.append(data)
            return
        self._pending[hop.address] = [data]
        task = asyncio.create_task(self._connect(hop))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, hop: Hop) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(
                    hop.host,
                    hop.port,
                    ssl=self._client_context,
                    server_hostname=(hop.tls_name or hop.host) if self._client_context else None,
                    limit=MAX_HEADER_BYTES,
                    # From our own address, as over UDP: the one our Via and Contact name
                    # and a carrier's allow-list knows (a multihomed host would else pick).
                    local_addr=None if self.host in WILDCARDS else (self.host, 0),
                )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            waiting = self._pending.pop(hop.address, [])
            log.warning("%s: cannot connect to %s: %s", self.name, hop, exc)
            if self.on_failure is not None and waiting:
                self.on_failure(hop, str(exc) or type(exc).__name__)
            return
        waiting = self._pending.pop(hop.address, [])
        if self._closed:
            writer.close()
            return
        connection = _Connection(self, hop, reader, writer, outgoing=True)
        self._connections[hop.address] = connection
        for data in waiting:
            connection.write(data)

    def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections.values()):
            connection.close()
        for task in list(self._tasks):
            task.cancel()
