"""Locating a SIP server (RFC 3263): from a SIP URI to the hops to try, in order.

- an IP address: that address, on the URI's port (default 5060, 5061 for TLS) and
  transport (``transport=`` parameter, TLS for ``sips:``, else UDP);
- a name with a port: its A records, on that port;
- a name with a ``transport=`` but no port: the SRV records of that transport
  (``_sip._udp``, ``_sip._tcp``, ``_sips._tcp``);
- a bare name: its NAPTR records (``SIP+D2U``, ``SIP+D2T``, ``SIPS+D2T``) in order and
  preference, each leading to SRV records; without NAPTR, the SRV records of every
  transport we have; without SRV, the name's A records on port 5060 over UDP.

SRV targets are ordered by priority, and within one priority by a weighted random draw
(RFC 2782). Every address of every target is a hop: the caller tries the next one when
a hop fails (503, timeout, no connection). For TLS the certificate must name the host of
the URI (RFC 5922), not the SRV target, so each hop carries that name.

``nameservers`` points the lookups at given servers (``"127.0.0.1:5353"``: a test's own
dnsmasq); without them the system's resolver configuration is used, and A records
come from ``getaddrinfo`` (which also reads /etc/hosts). Answers are cached for their
TTL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from faxbox.fax.sip.message import SipUri
from faxbox.fax.sip.transport import DEFAULT_PORTS, TCP, TLS, UDP, Hop

log = logging.getLogger("faxbox.fax.sip.resolve")

_NAPTR_SERVICES = {"sip+d2u": UDP, "sip+d2t": TCP, "sips+d2t": TLS}
_SRV_PREFIX = {UDP: "_sip._udp", TCP: "_sip._tcp", TLS: "_sips._tcp"}
MAX_HOPS = 8


class ResolveError(LookupError):
    """The name has no address we could use."""


def transport_of(uri: SipUri) -> str | None:
    """The transport the URI asks for, if any."""
    param = (uri.params.get("transport") or "").upper()
    if uri.scheme == "sips":
        return TLS
    if param in (UDP, TCP, TLS):
        return param
    return None


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Srv:
    priority: int
    weight: int
    port: int
    target: str


def order_srv(records: Sequence[_Srv], rng: random.Random | None = None) -> list[_Srv]:
    """RFC 2782: by priority; within a priority, weighted random selection."""
    draw = rng or random
    out: list[_Srv] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        while group:
            total = sum(r.weight for r in group)
            if total == 0:
                out.extend(group)
                break
            pick = draw.uniform(0, total)
            running = 0
            for r in group:
                running += r.weight
                if running >= pick:
                    out.append(r)
                    group.remove(r)
                    break
    return out


class Resolver:
    """RFC 3263 lookups; ``transports`` are the ones we can use, in our preference."""

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        *,
        transports: Sequence[str] = (UDP, TCP, TLS),
        timeout_s: float = 3.0,
    ) -> None:
        self.transports = tuple(transports)
        self._nameservers = tuple(nameservers)
        self._timeout_s = timeout_s
        self._dns: dns.asyncresolver.Resolver | None = None  # made at the first lookup
        self._cache: dict[tuple[str, str], tuple[float, list[object]]] = {}

    @property
    def _own_servers(self) -> bool:
        return bool(self._nameservers)

    def _resolver(self) -> dns.asyncresolver.Resolver | None:
        if self._dns is None:
            try:
                resolver = dns.asyncresolver.Resolver(configure=not self._nameservers)
            except dns.resolver.NoResolverConfiguration:
                log.warning("no DNS resolver configuration: SRV/NAPTR lookups are off")
                return None
            if self._nameservers:
                servers: list[dns.nameserver.Nameserver] = []
                for text in self._nameservers:
                    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
                    servers.append(dns.nameserver.Do53Nameserver(host, int(port) if port else 53))
                resolver.nameservers = servers
            resolver.lifetime = self._timeout_s
            self._dns = resolver
        return self._dns

    async def hops(self, uri: SipUri | str) -> list[Hop]:
        """The hops to try for ``uri``, best first (``ResolveError`` when none)."""
        if isinstance(uri, str):
            uri = SipUri.parse(uri)
        wanted = transport_of(uri)
        host = uri.host
        tls_name = None if is_ip(host) else host
        if is_ip(host) or uri.port is not None:
            transport = wanted or UDP
            port = uri.port or DEFAULT_PORTS[transport]
            addresses = [host] if is_ip(host) else await self._addresses(host)
            return [Hop(transport, a, port, tls_name) for a in addresses][:MAX_HOPS]
        if wanted is not None:
            targets = await self._srv(f"{_SRV_PREFIX[wanted]}.{host}", wanted)
        else:
            targets = await self._naptr(host)
            if not targets:
                for transport in self.transports:
                    targets += await self._srv(f"{_SRV_PREFIX[transport]}.{host}", transport)
        hops: list[Hop] = []
        if targets:
            for transport, srv in targets:
                for address in await self._addresses(srv.target):
                    hops.append(Hop(transport, address, srv.port, tls_name))
        else:
            transport = wanted or UDP
            hops = [
                Hop(transport, a, DEFAULT_PORTS[transport], tls_name)
                for a in await self._addresses(host)
            ]
        if not hops:
            raise ResolveError(f"no address for {uri}")
        return hops[:MAX_HOPS]

    async def _query(self, name: str, rdtype: str) -> list[object]:
        key = (name.lower(), rdtype)
        loop = asyncio.get_running_loop()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        resolver = self._resolver()
        if resolver is None:
            return []
        try:
            answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            log.debug("%s %s: %s", rdtype, name, exc)
            return []
        records: list[object] = list(answer.rrset) if answer.rrset is not None else []
        ttl = answer.rrset.ttl if answer.rrset is not None else 30
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[key] = (loop.time() + max(1, ttl), records)
        return records

    async def _naptr(self, host: str) -> list[tuple[str, _Srv]]:
        records = await self._query(host, "NAPTR")
        usable = []
        for record in records:
            service = str(getattr(record, "service", b"").decode()).lower()
            flags = getattr(record, "flags", b"").decode().lower()
            transport = _NAPTR_SERVICES.get(service)
            if transport is None or transport not in self.transports or flags != "s":
                continue
            order = int(getattr(record, "order", 0))
            preference = int(getattr(record, "preference", 0))
            replacement = str(getattr(record, "replacement", "")).rstrip(".")
            usable.append((order, preference, transport, replacement))
        out: list[tuple[str, _Srv]] = []
        for _, _, transport, replacement in sorted(usable):
            out += await self._srv(replacement, transport)
        return out

    async def _srv(self, name: str, transport: str) -> list[tuple[str, _Srv]]:
        if transport not in self.transports:
            return []
        records = [
            _Srv(
                int(getattr(r, "priority", 0)),
                int(getattr(r, "weight", 0)),
                int(getattr(r, "port", 0)),
                str(getattr(r, "target", "")).rstrip("."),
            )
            for r in await self._query(name, "SRV")
        ]
        return [(transport, r) for r in order_srv(records) if r.target and r.port]

    async def _addresses(self, host: str) -> list[str]:
        if is_ip(host):
            return [host]
        if self._own_servers:
            return [str(getattr(r, "address", "")) for r in await self._query(host, "A")]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                host, None, family=socket.AF_INET, type=socket.SOCK_DGRAM
            )
        except socket.gaierror as exc:
            log.debug("A %s: %s", host, exc)
            return []
        seen: list[str] = []
        for info in infos:
            address = str(info[4][0])
            if address not in seen:
                seen.append(address)
        return seen
