"""Route sets (RFC 3261 §12.1, §16.12): where a dialog's requests go, through which proxies.

A dialog's route set comes from the Record-Route headers of the request or response
that made it: in order for the callee, reversed for the caller. Every request in the
dialog then carries those proxies as Route headers and goes to the first of them; with
none, straight to the far end's Contact. A loose router (``;lr``, every proxy since RFC
3261, Kamailio's ``record_route()`` included) keeps the Request-URI as the remote target;
a strict router (RFC 2543) gets the Request-URI itself and the remote target as the
last Route (§12.2.1.1). An outbound proxy is a preloaded route set of one for the
requests outside a dialog (§8.1.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from faxbox.fax.sip.message import NameAddr, SipMessage, SipParseError, SipRequest, SipUri


@dataclass
class RouteSet:
    """The proxies a dialog's requests pass through (name-addr values, first hop first)."""

    routes: list[str] = field(default_factory=list)

    @classmethod
    def from_record_route(cls, message: SipMessage, *, reverse: bool) -> RouteSet:
        routes = message.headers.get_all("Record-Route")
        return cls(list(reversed(routes)) if reverse else list(routes))

    @classmethod
    def preloaded(cls, proxy: str | None) -> RouteSet:
        """An outbound proxy (``sip:proxy.example.net;transport=tcp``) as a loose route."""
        if not proxy:
            return cls()
        text = proxy.strip()
        # A bare URI's parameters are the URI's (;transport=tcp), not a header's.
        uri = SipUri.parse(NameAddr.parse(text).uri if "<" in text else text)
        uri.params.setdefault("lr", None)
        return cls([f"<{uri}>"])

    def __bool__(self) -> bool:
        return bool(self.routes)

    def _uris(self) -> list[str]:
        return [NameAddr.parse(route).uri for route in self.routes]

    def _loose(self) -> bool:
        try:
            return "lr" in SipUri.parse(self._uris()[0]).params
        except (SipParseError, IndexError):
            return True

    def next_hop_uri(self, remote_target: str) -> str:
        """The URI whose server gets the request: the first route, else the target."""
        return self._uris()[0] if self.routes else remote_target

    def apply(self, request: SipRequest, remote_target: str) -> None:
        """Set the Request-URI and Route headers of ``request`` (in a dialog)."""
        request.headers.remove("Route")
        if not self.routes:
            request.uri = remote_target
            return
        if self._loose():
            request.uri = remote_target
            for route in self.routes:
                request.headers.add("Route", route)
            return
        first, *rest = self._uris()
        request.uri = first
        for route in self.routes[1:] if rest else []:
            request.headers.add("Route", route)
        request.headers.add("Route", f"<{remote_target}>")
