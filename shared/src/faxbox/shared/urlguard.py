"""Where webhooks may be sent: public addresses only, unless the platform allows more.

A webhook URL is typed in by a customer, and the webhooks service then makes requests
to it from inside the platform's network: without a guard, ``http://127.0.0.1:15672/``
or ``http://169.254.169.254/`` would let a customer reach what only the platform
should (server-side request forgery). So a URL is refused when its host is, or resolves
to, any address that is not public: loopback, private (RFC 1918, fc00::/7), link-local
(cloud metadata), carrier-grade NAT, multicast, reserved or unspecified, IPv4 inside
IPv6 included. The platform may allow networks (``FAXBOX_WEBHOOKS_ALLOWED_NETWORKS``,
e.g. a partner's VPN, or loopback in tests).

The check runs when a webhook is saved (portal, CLI) and again before every delivery,
which then connects to the very address it checked (``Target.addresses``), so a name
that resolves to a public address at check time and to a private one a moment later
(DNS rebinding) is not followed. Redirects are never followed either.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_LENGTH: Final = 2000
_ALLOW_HINT: Final = (
    "only public addresses can receive webhooks (the platform operator can allow a "
    "network with FAXBOX_WEBHOOKS_ALLOWED_NETWORKS)"
)


class UrlRefused(ValueError):
    """A webhook URL that cannot be used; ``code`` names the rule, the message the fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL and the addresses it may be reached at."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]

    def url_at(self, address: IPAddress) -> str:
        """The URL with its host replaced by ``address`` (the Host header keeps the name)."""
        parts = urlsplit(self.url)
        shown = f"[{address}]" if address.version == 6 else str(address)
        return urlunsplit(parts._replace(netloc=f"{shown}:{self.port}"))


def parse_networks(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    """The allowed networks of a setting; ValueError names a bad one."""
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not a network (like 10.0.0.0/8)") from None
    return tuple(networks)


def checked_syntax(url: str) -> SplitResult:
    """The URL's parts if it is an absolute http(s) URL a webhook can use."""
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused("too_long", f"a webhook URL has at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused("malformed", f"{url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("scheme", f"{url!r}: a webhook URL starts with https:// (or http://)")
    if not parts.hostname:
        raise UrlRefused("malformed", f"{url!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused(
            "credentials",
            f"{url!r} holds a user name or password; webhooks are signed instead "
            "(check the Faxbox-Signature header)",
        )
    if parts.fragment:
        raise UrlRefused("malformed", f"{url!r}: a webhook URL has no #fragment")
    if port == 0:
        raise UrlRefused("malformed", f"{url!r}: port 0")
    return parts


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def refusal(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why ``address`` may not receive webhooks, or None if it may."""
    plain = _unmapped(address)
    if any(plain in network or address in network for network in allowed):
        return None
    if plain.is_loopback:
        return "a loopback address"
    if plain.is_link_local:
        return "a link-local address"
    if plain.is_unspecified:
        return "an unspecified address"
    if plain.is_multicast:
        return "a multicast address"
    if plain.is_private:
        return "a private address"
    if plain.is_reserved:
        return "a reserved address"
    if not plain.is_global:
        return "an address that is not public"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


async def check_url(
    url: str,
    allowed: Sequence[IPNetwork] = (),
    resolver: Resolver = system_resolver,
) -> Target:
    """The URL as a ``Target``, every address it resolves to checked; ``UrlRefused``
    otherwise (a name with one refused address among good ones is refused too)."""
    parts = checked_syntax(url)
    host = parts.hostname
    assert host is not None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        found: list[IPAddress] = [literal]
    else:
        try:
            names = await resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise UrlRefused(
                "unresolvable", f"the host {host} of {url!r} cannot be resolved: {exc}"
            ) from None
        found = list(dict.fromkeys(ipaddress.ip_address(name.split("%")[0]) for name in names))
        if not found:
            raise UrlRefused("unresolvable", f"the host {host} of {url!r} has no address")
    for address in found:
        why = refusal(address, allowed)
        if why is not None:
            raise UrlRefused(
                "not_public",
                f"{url!r} points at {address}, {why}; {_ALLOW_HINT}",
            )
    return Target(url.strip(), parts.scheme, host, port, tuple(found))
