"""How SIP messages and media reach the network: UDP sockets, hops, the SIP transport.

``DatagramEndpoint`` is one bound UDP socket; every datagram that arrives is handed to
its ``datagram`` method, looked up per datagram so that a simulator or a test can wrap
it on one instance (packet loss, delay). The RTP and UDPTL streams are endpoints.

A ``Hop`` is where one SIP message goes (or came from): a transport token (UDP, TCP,
TLS) and an address. ``Transport`` is what a user agent sends its SIP messages through
and receives them from: it knows its local address and its Via token. ``UdpTransport``
is one socket, one message per datagram; responses go back to where the request came
from (rport style). The stream transports (TCP, TLS) are ``faxbox.fax.sip.stream``:
they frame messages by Content-Length and hand each to the same ``on_message``
callback, with the hop that answers on the connection it came in on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from faxbox.fax.sip.ports import PortRange

log = logging.getLogger("faxbox.fax.sip.transport")

Address = tuple[str, int]

UDP = "UDP"
TCP = "TCP"
TLS = "TLS"
TRANSPORTS = (UDP, TCP, TLS)
DEFAULT_PORTS = {UDP: 5060, TCP: 5060, TLS: 5061}


@dataclass(frozen=True, slots=True)
class Hop:
    """The next hop of a message: transport token and address.

    ``tls_name`` is the name a TLS peer's certificate must carry (the host we looked up,
    not the address it resolved to); ``tcp_allowed`` says whether a UDP hop may switch to
    TCP for a large message (RFC 3261 §18.1.1). Neither takes part in equality, so the
    hop of a received message matches the one we send on.
    """

    transport: str
    host: str
    port: int
    tls_name: str | None = field(default=None, compare=False)
    tcp_allowed: bool = field(default=True, compare=False)

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @property
    def reliable(self) -> bool:
        return self.transport != UDP

    def over(self, transport: str) -> Hop:
        return Hop(transport, self.host, self.port, self.tls_name, self.tcp_allowed)

    def __str__(self) -> str:
        return f"{self.transport.lower()}:{self.host}:{self.port}"


MessageHandler = Callable[[bytes, Hop], None]
FailureHandler = Callable[[Hop, str], None]


class SocketClosed(ConnectionError):
    """The socket is not open (not yet, or no more)."""


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: DatagramEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self.endpoint.datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable while the peer's socket is not up yet, or gone: ignore.
        log.debug("socket error: %s", exc)


class DatagramEndpoint:
    """One UDP socket: ``bind`` it, ``sendto`` through it, receive in ``datagram``."""

    _transport: asyncio.DatagramTransport | None = None
    _range: PortRange | None = None

    def datagram(self, data: bytes, addr: Address) -> None:
        raise NotImplementedError

    async def bind(self, host: str, port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(host, port)
        )

    async def bind_in(self, host: str, ports: PortRange | None, *, even: bool = False) -> None:
        """Bind to a free port of ``ports`` (None: any port); it goes back on close."""
        if ports is None:
            await self.bind(host, 0)
            return
        await ports.bind(lambda port: self.bind(host, port), even=even)
        self._range = ports

    @property
    def local_port(self) -> int:
        if self._transport is None:
            raise SocketClosed("not open")
        return int(self._transport.get_extra_info("sockname")[1])

    @property
    def socket_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def sendto(self, data: bytes, addr: Address) -> None:
        if self._transport is None:
            raise SocketClosed("not open")
        self._transport.sendto(data, addr)

    def close_socket(self) -> None:
        if self._transport is not None:
            port = self.local_port
            self._transport.close()
            if self._range is not None:
                self._range.release(port)
                self._range = None


class Transport(Protocol):
    """Where a user agent's SIP messages go out and come in."""

    @property
    def name(self) -> str:
        """The Via transport token: UDP, TCP, TLS."""
        ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def is_open(self) -> bool: ...

    def send(self, data: bytes, hop: Hop) -> None: ...

    def close(self) -> None: ...


class UdpTransport(DatagramEndpoint):
    """SIP over one UDP socket: one message per datagram, in and out."""

    name = UDP

    def __init__(self, host: str, on_message: MessageHandler) -> None:
        self.host = host
        self.port = 0
        self.on_message = on_message

    @classmethod
    async def open(cls, host: str, port: int, on_message: MessageHandler) -> UdpTransport:
        transport = cls(host, on_message)
        await transport.bind(host, port)
        transport.port = transport.local_port
        return transport

    @property
    def is_open(self) -> bool:
        return self.socket_open

    def datagram(self, data: bytes, addr: Address) -> None:
        self.on_message(data, Hop(UDP, addr[0], addr[1]))

    def send(self, data: bytes, hop: Hop) -> None:
        if self.socket_open:  # closed: what is left to send is dropped
            self.sendto(data, hop.address)

    def close(self) -> None:
        self.close_socket()
