"""Who is on the other end: the client address and whether it came over TLS.

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are anyone's to write, so they are read
only when the connection comes from a configured proxy (``FAXBOX_PORTAL_TRUSTED_PROXIES``,
addresses or networks). Then the client is the right-most address of the chain that is
not itself a trusted proxy (each proxy appends the address it saw; anything left of
that was written by the client and proves nothing). Otherwise the client is the peer,
whatever the headers say: sign-in limits and logs key on an address a client cannot
choose.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        networks = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return cls(tuple(networks))

    def trusts(self, host: str | None) -> bool:
        address = _address(host or "")
        return address is not None and any(address in n for n in self.networks)

    def client(self, request: Request) -> str:
        peer = request.client.host if request.client else "unknown"
        if not self.trusts(peer):
            return peer
        chain = [
            part
            for header in request.headers.getlist("x-forwarded-for")
            for part in header.split(",")
            if part.strip()
        ]
        for hop in reversed(chain):
            address = _address(hop)
            if address is None:
                return peer  # unreadable: trust nothing left of it
            if not any(address in n for n in self.networks):
                return str(address)
        return peer

    def over_tls(self, request: Request) -> bool:
        if request.url.scheme == "https":
            return True
        peer = request.client.host if request.client else None
        if not self.trusts(peer):
            return False
        proto = request.headers.get("x-forwarded-proto", "")
        return proto.split(",")[0].strip().lower() == "https"
