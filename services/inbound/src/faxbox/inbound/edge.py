"""Which INVITEs the inbound receiver looks at: only its carriers', at a sane rate.

Every INVITE is judged before anything else is done with it (number lookup, a line):

0. **load**: while the process's event loop runs late (``faxbox.shared.looplag``), 503
   Service Unavailable with Retry-After: a carrier then tries its next route, and the
   calls already on our lines keep their media on time (the bound is in call time:
   divided by the line's pace).
1. **rate**: at most ``invites_per_s`` a second from one source address, with bursts of
   ``burst`` (a token bucket per address); over it, 503 with Retry-After. A carrier
   starting many calls at once fits in the burst; a flood does not reach the lookups.
2. **source**: the address must be one a carrier's calls come from: its ``sip_allow``
   networks, or, when it lists none, the addresses its SIP address resolves to (its
   ``sip_host``, with RFC 3263 SRV targets when the user agent's resolver is given) and
   its ``outbound_proxy``'s: a carrier we register with sends our calls from its
   registrar or its proxy (Kamailio in front of it), not from its media gateways.
   Anything else gets 403: nobody but a carrier may put calls (and faxes, on someone's bill of
   paper and attention) into the receiver.
3. **digest** (optional, per carrier): a carrier with an ``inbound_username`` must
   answer a digest challenge (401) with it and its ``inbound_password``.

Carriers are read from the database every ``refresh_s`` seconds (and their host names
resolved then), so a carrier added with the CLI is heard within that time; while the
database does not answer, the last list read stands. Every
refusal is counted by reason (``faxbox_inbound_invites_refused_total``) and logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from faxbox.fax.sip.carrier import carrier_uri
from faxbox.fax.sip.digest import Credentials, authorization_matches, digest_challenge
from faxbox.fax.sip.message import SipParseError, SipRequest, SipUri
from faxbox.fax.sip.resolve import ResolveError, Resolver
from faxbox.inbound.ports import CarrierSource
from faxbox.shared.looplag import LoadGauge
from faxbox.shared.policy import is_infrastructure
from faxbox.shared.secretbox import SecretBox
from faxbox.shared.store import Carrier

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
REALM = "faxbox"
_MAX_TRACKED = 10_000  # source addresses remembered by the rate limit, and nonces


@dataclass(frozen=True, slots=True)
class Admitted:
    carrier: Carrier


@dataclass(frozen=True, slots=True)
class Refused:
    status: int
    reason: str  # the SIP reason phrase
    why: str  # the metric label: rate, source, auth
    headers: tuple[tuple[str, str], ...] = ()


Verdict = Admitted | Refused


class InviteRate:
    """A token bucket per source address."""

    def __init__(
        self, per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_s = per_s
        self.burst = burst
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str) -> bool:
        now = self.clock()
        tokens, at = self._buckets.pop(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_s)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > _MAX_TRACKED:
            self._buckets.popitem(last=False)
        return allowed


async def _resolve(host: str) -> list[Network]:
    try:
        return [ipaddress.ip_network(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError as exc:
        log.warning("carrier host %s does not resolve (%s): its calls are refused", host, exc)
        return []
    return [ipaddress.ip_network(str(info[4][0])) for info in infos]


def _hosts(carrier: Carrier) -> list[str]:
    """The hosts a carrier's calls come from when it lists no addresses."""
    hosts = [carrier.sip_host] if carrier.sip_host else []
    for uri in (None if carrier.sip_host else carrier.sip_uri, carrier.outbound_proxy):
        if uri:
            try:
                hosts.append(SipUri.parse(uri).host)
            except SipParseError:
                log.warning("carrier %s: %r is not a SIP URI", carrier.name, uri)
    return hosts


async def _networks(carrier: Carrier, resolver: Resolver | None) -> list[Network]:
    if carrier.sip_allow:
        return [ipaddress.ip_network(n) for n in carrier.sip_allow]
    networks: list[Network] = []
    for host in _hosts(carrier):
        networks += await _resolve(host)
    if resolver is not None and (carrier.sip_host or carrier.sip_uri):
        try:
            hops = await resolver.hops(carrier_uri(carrier))  # SRV targets of a domain
        except (ResolveError, SipParseError, ValueError):
            hops = []
        networks += [ipaddress.ip_network(h.host) for h in hops]
    return list(dict.fromkeys(networks))


@dataclass
class CarrierEdge:
    carriers: CarrierSource
    secrets: SecretBox | None = None
    resolver: Resolver | None = None
    invites_per_s: float = 20.0
    burst: int = 40
    refresh_s: float = 5.0
    refresh_timeout_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    load: LoadGauge | None = None
    overload_retry_after_s: int = 10
    overload_bound_ms: float | None = None  # None: the gauge's own
    rate: InviteRate = field(init=False)
    _known: list[tuple[Carrier, list[Network]]] = field(init=False, default_factory=list)
    _loaded_at: float | None = field(init=False, default=None)
    _nonces: OrderedDict[str, None] = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.rate = InviteRate(self.invites_per_s, self.burst, self.clock)

    async def known(self) -> list[tuple[Carrier, list[Network]]]:
        """Every carrier with the networks its calls may come from (cached)."""
        now = self.clock()
        if self._loaded_at is None or now - self._loaded_at >= self.refresh_s:
            try:
                # Bounded: an INVITE waits on this, and a stale list is better than none.
                async with asyncio.timeout(self.refresh_timeout_s):
                    carriers = await self.carriers.list_carriers()
            except Exception as exc:
                if self._loaded_at is None or not is_infrastructure(exc):
                    raise
                # The database is down: the carriers we knew still are ours.
                log.warning("carriers not re-read (%s); using the last list", type(exc).__name__)
                self._loaded_at = now
                return self._known
            known = []
            for carrier in carriers:
                known.append((carrier, await _networks(carrier, self.resolver)))
            self._known, self._loaded_at = known, now
            if not known:
                log.warning("no carrier is configured: every inbound call is refused (403)")
        return self._known

    async def carrier_for(self, source: str) -> Carrier | None:
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return None
        for carrier, networks in await self.known():
            if any(address in network for network in networks):
                return carrier
        return None

    async def judge(self, request: SipRequest, source: str) -> Verdict:
        if self.load is not None and self.load.overloaded(self.overload_bound_ms) is not None:
            retry = (("Retry-After", str(self.overload_retry_after_s)),)
            return Refused(503, "Service Unavailable", "overload", retry)
        if not self.rate.allow(source):
            return Refused(503, "Too Many Calls", "rate", (("Retry-After", "5"),))
        carrier = await self.carrier_for(source)
        if carrier is None:
            return Refused(403, "Forbidden", "source")
        if carrier.inbound_username:
            password = carrier.inbound_secret(self.secrets) or ""
            expected = Credentials(carrier.inbound_username, password)
            header = request.headers.get("Authorization")
            if header is None or not authorization_matches(
                header, expected, request.method, realm=REALM, nonces=self._nonces
            ):
                why = "auth" if header is not None else "challenge"
                challenge = digest_challenge(REALM, self._new_nonce())
                return Refused(401, "Unauthorized", why, (("WWW-Authenticate", challenge),))
        return Admitted(carrier)

    def _new_nonce(self) -> str:
        nonce = secrets.token_hex(16)
        self._nonces[nonce] = None
        while len(self._nonces) > _MAX_TRACKED:
            self._nonces.popitem(last=False)
        return nonce
