"""How SIP messages and media reach the network: UDP sockets and the SIP transport.

``DatagramEndpoint`` is one bound UDP socket; every datagram that arrives is handed to
its ``datagram`` method, looked up per datagram so that a simulator or a test can wrap
it on one instance (packet loss, delay). The RTP and UDPTL streams are endpoints.

``Transport`` is what a user agent sends its SIP messages through and receives them
from: it knows its local address and the token for the Via header. ``UdpTransport`` is
the one we have: one socket, one message per datagram, responses sent back to where the
request came from (rport style). A stream transport (TCP, TLS) fits the same shape: it
frames messages by Content-Length and hands each to the same ``on_message`` callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("faxbox.fax.sip.transport")

Address = tuple[str, int]
MessageHandler = Callable[[bytes, Address], None]


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

    def datagram(self, data: bytes, addr: Address) -> None:
        raise NotImplementedError

    async def bind(self, host: str, port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(host, port)
        )

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
            self._transport.close()


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

    def send(self, data: bytes, addr: Address) -> None: ...

    def close(self) -> None: ...


class UdpTransport(DatagramEndpoint):
    """SIP over one UDP socket: one message per datagram, in and out."""

    name = "UDP"

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
        self.on_message(data, addr)

    def send(self, data: bytes, addr: Address) -> None:
        if self.socket_open:  # closed: what is left to send is dropped
            self.sendto(data, addr)

    def close(self) -> None:
        self.close_socket()
