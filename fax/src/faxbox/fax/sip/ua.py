"""The SIP user agent (RFC 3261 subset): calls out and in over UDP, TCP and TLS.

One ``UserAgent`` owns its transports (UDP always; TCP and TLS when asked for), one
``TransactionLayer`` and the table of its dialogs. It can ``dial`` (``outgoing``: the
INVITE with digest, PRACK, 3xx, 422, DNS failover, CANCEL) and ``listen`` for incoming
INVITEs (the handler answers or rejects an ``IncomingCall``). Every message in is parsed
here and routed: responses to their transaction, requests to a transaction
(retransmissions), a dialog (ACK, BYE, re-INVITE, UPDATE, PRACK of an early dialog) or
a new call.

Addresses: the UA binds to ``host``; Via, Contact and SDP show ``advertised_address``
when one is set (a public address in front of a NAT), else ``host``. Media streams
take their ports from ``media_ports`` when given (a fixed range a firewall can open),
else any free port. Our Via names the transport each request goes on, and our Contact
carries ``transport=tcp|tls`` for a dialog over a stream. A request over UDP that is
larger than 1300 bytes goes over TCP instead when the UA has TCP and the hop allows it
(RFC 3261 §18.1.1).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from types import TracebackType
from typing import Any, Self, Unpack

from faxbox.fax.sip.dialog import ALLOW, Call
from faxbox.fax.sip.digest import Credentials
from faxbox.fax.sip.incoming import IncomingCall
from faxbox.fax.sip.message import (
    SipParseError,
    SipRequest,
    SipResponse,
    Via,
    new_branch,
    new_tag,
    parse_message,
)
from faxbox.fax.sip.outgoing import CallFailed as CallFailed
from faxbox.fax.sip.outgoing import Dialling, DialOptions, place_call
from faxbox.fax.sip.outgoing import FailureKind as FailureKind
from faxbox.fax.sip.ports import PortRange
from faxbox.fax.sip.resolve import ResolveError, Resolver
from faxbox.fax.sip.sdp import T38Params
from faxbox.fax.sip.session_timer import SessionTimerSettings
from faxbox.fax.sip.stream import StreamTransport, TlsSettings
from faxbox.fax.sip.transaction import T1, T2, ClientTransaction, TransactionLayer
from faxbox.fax.sip.transport import TCP, TLS, UDP, Address, Hop, Transport, UdpTransport

log = logging.getLogger("faxbox.fax.sip")

UDP_MAX_BYTES = 1300  # RFC 3261 §18.1.1: larger requests go over TCP

Handler = Callable[[IncomingCall], Awaitable[None]]


class UserAgent:
    """SIP over UDP (and TCP/TLS): ``dial`` out, ``listen`` for calls in.

    ``pace`` is the media clock for all its calls (1.0 real time, N: N times faster,
    0: unpaced lock-step audio; see ``rtp``). ``t1``/``t2`` are the RFC 3261 timers.
    ``jitter_prefill`` (packets) defaults to ``rtp.default_prefill(pace)``.
    ``credentials`` answer 401/407 challenges on ``dial`` unless given per call;
    ``accept_t38`` decides whether a T.38 re-INVITE is accepted (per call: ``Call.accept_t38``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        user: str = "faxbox",
        pace: float = 1.0,
        t1: float = T1,
        t2: float = T2,
        credentials: Credentials | None = None,
        accept_t38: bool = True,
        jitter_prefill: int | None = None,
        user_agent: str = "Faxbox",
        advertised_address: str | None = None,
        media_ports: PortRange | None = None,
        session_timer: SessionTimerSettings | None = None,
        prefer_100rel: bool = False,
        t38: T38Params | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.host = host
        self.port = 0
        self.user = user
        self.pace = pace
        self.credentials = credentials
        self.accept_t38 = accept_t38
        self.jitter_prefill = jitter_prefill
        self.advertised_address = advertised_address
        self.media_ports = media_ports
        self.session_timer = session_timer or SessionTimerSettings()
        self.prefer_100rel = prefer_100rel
        self.t38 = t38 or T38Params()
        self.transports: dict[str, Transport] = {}
        self.resolver = resolver or Resolver()
        self.transactions = TransactionLayer(
            self.send, t1=t1, t2=t2, product=user_agent, on_stray_2xx=self._on_stray_2xx
        )
        self._handler: Handler | None = None
        self._incoming: dict[str, IncomingCall] = {}  # by INVITE branch
        self._early: dict[tuple[str, str], IncomingCall] = {}  # by (Call-ID, our tag)
        self._calls: dict[tuple[str, str], Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent: list[bytes] = []  # the last messages sent and received, for tests/debugging
        self.received: list[bytes] = []

    @classmethod
    async def start(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        transports: tuple[str, ...] = (UDP,),
        tls: TlsSettings | None = None,
        tls_port: int | None = None,
        keepalive_s: float = 30.0,
        **options: Any,
    ) -> UserAgent:
        """A user agent on host:port (0: a free port) over ``transports`` (UDP always).

        TCP listens on the UDP port's number. TLS connects out with ``tls`` (verifying
        the peer unless ``tls.verify`` is off) and listens on ``tls_port`` (0: any free
        port) when ``tls`` has a certificate. Options as for ``__init__``.
        """
        ua = cls(host, **options)
        wanted = {t.upper() for t in transports} | {UDP}
        if TLS in wanted or TCP in wanted:
            ua.resolver.transports = tuple(t for t in (UDP, TCP, TLS) if t in wanted)
        for attempt in range(20):
            udp = await UdpTransport.open(host, port, ua.receive)
            ua.transports[UDP] = udp
            ua.port = udp.port
            if TCP not in wanted:
                break
            try:
                ua.transports[TCP] = await StreamTransport.open(
                    TCP,
                    host,
                    udp.port,
                    ua.receive,
                    on_failure=ua.transactions.transport_failed,
                    keepalive_s=keepalive_s,
                )
                break
            except OSError:
                udp.close()
                if port or attempt == 19:
                    raise
        if TLS in wanted:
            settings = tls or TlsSettings()
            listen = tls_port if settings.cert_file is not None else None
            ua.transports[TLS] = await StreamTransport.open(
                TLS,
                host,
                listen,
                ua.receive,
                tls=settings,
                on_failure=ua.transactions.transport_failed,
                keepalive_s=keepalive_s,
            )
        return ua

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        calls = [c for c in self._calls.values() if not c.is_ended]
        if calls:  # BYE each; a few retransmissions' time for the answers, not 64·T1
            hangups = [asyncio.create_task(c.hangup()) for c in calls]
            _, pending = await asyncio.wait(hangups, timeout=8 * self.t1)
            for task in pending:
                task.cancel()
        for task in list(self._tasks):
            task.cancel()
        self.transactions.close()
        for transport in self.transports.values():
            transport.close()
        self.transports = {}

    @property
    def t1(self) -> float:
        return self.transactions.t1

    @property
    def transport(self) -> Transport | None:
        """The UDP transport (None once closed)."""
        return self.transports.get(UDP)

    @property
    def is_open(self) -> bool:
        """Whether the transports are up (a readiness check)."""
        return bool(self.transports) and all(t.is_open for t in self.transports.values())

    @property
    def media_address(self) -> str:
        return self.advertised_address or self.host

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @property
    def uri(self) -> str:
        return f"sip:{self.media_address}:{self.port}"

    def uri_for(self, transport: str) -> str:
        """Where to reach us over ``transport`` (``sip:host:port;transport=tcp``)."""
        name = transport.upper()
        if name == UDP:
            return self.uri
        return f"sip:{self.media_address}:{self._port_of(name)};transport={name.lower()}"

    def listen(self, handler: Handler) -> None:
        """Route incoming INVITEs to ``handler`` (one task per call)."""
        self._handler = handler

    # --- transport --------------------------------------------------------------------

    def send(self, data: bytes, hop: Hop) -> None:
        transport = self.transports.get(hop.transport)
        if transport is None:
            log.warning("no %s transport for a message to %s", hop.transport, hop)
            self.transactions.transport_failed(hop, f"no {hop.transport} transport")
            return
        self._keep(self.sent, data)
        transport.send(data, hop)

    @staticmethod
    def _keep(log_list: list[bytes], data: bytes) -> None:
        log_list.append(data)
        if len(log_list) > 200:
            del log_list[:100]

    def _port_of(self, transport: str) -> int:
        found = self.transports.get(transport)
        return found.port if found is not None and found.port else self.port

    def via(self, branch: str, transport: str = UDP) -> str:
        return str(
            Via(
                self.media_address,
                self._port_of(transport),
                transport,
                {"branch": branch, "rport": None},
            )
        )

    def contact(self, user: str | None = None, transport: str = UDP) -> str:
        name = transport.upper()
        suffix = "" if name == UDP else f";transport={name.lower()}"
        return f"<sip:{user or self.user}@{self.media_address}:{self._port_of(name)}{suffix}>"

    def stamp_via(self, request: SipRequest, hop: Hop) -> Hop:
        """Our Via (a new branch) on top of ``request``; the hop it goes on, which is TCP
        instead of UDP when the request is too large for UDP (§18.1.1)."""
        request.headers.remove("Via")
        branch = new_branch()
        request.headers.items.insert(0, ("Via", self.via(branch, hop.transport)))
        if (
            hop.transport == UDP
            and hop.tcp_allowed
            and TCP in self.transports
            and len(request.serialize()) > UDP_MAX_BYTES
        ):
            hop = hop.over(TCP)
            request.headers.items[0] = ("Via", self.via(branch, TCP))
        return hop

    def request(self, request: SipRequest, hop: Hop) -> ClientTransaction:
        """Send a request we originate to ``hop`` in a new client transaction."""
        return self.transactions.client(request, self.stamp_via(request, hop))

    async def hops(self, uri: str) -> list[Hop]:
        """The hops for ``uri`` (RFC 3263), keeping those over our transports."""
        hops = [h for h in await self.resolver.hops(uri) if h.transport in self.transports]
        if not hops:
            raise ResolveError(f"no usable hop for {uri} over {', '.join(self.transports)}")
        return hops

    async def hop_for(self, uri: str, fallback: Hop | None = None) -> Hop:
        try:
            return (await self.hops(uri))[0]
        except (ResolveError, SipParseError, ValueError):
            if fallback is None:
                raise
            return fallback

    def receive(self, data: bytes, hop: Hop) -> None:
        """One message from a transport (``hop``: where it came from, and how)."""
        if not data.strip():
            return  # keep-alive
        try:
            message = parse_message(data)
            self._keep(self.received, data)
            if isinstance(message, SipResponse):
                self.transactions.on_response(message)
            else:
                self._on_request(message, hop)
        except (SipParseError, ValueError) as exc:
            log.info("dropped a bad SIP message from %s: %s", hop, exc)
        except Exception:  # never let one message take the transport down
            log.exception("failed to handle a SIP message from %s", hop)

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SIP task failed", exc_info=task.exception())

    # --- dialogs ----------------------------------------------------------------------

    def remember(self, call: Call) -> None:
        self._calls[call.key] = call

    def forget(self, call: Call) -> None:
        asyncio.get_running_loop().call_later(
            self.transactions.timeout, self._calls.pop, call.key, None
        )

    def remember_early(self, incoming: IncomingCall) -> None:
        self._early[incoming.key] = incoming
        asyncio.get_running_loop().call_later(
            2 * self.transactions.timeout, self._early.pop, incoming.key, None
        )

    @property
    def calls(self) -> list[Call]:
        """The dialogs we hold (ended ones for 64·T1 after they ended)."""
        return list(self._calls.values())

    # --- client side ------------------------------------------------------------------

    def _on_stray_2xx(self, response: SipResponse) -> None:
        call = self._calls.get((response.call_id, response.from_.tag or ""))
        if call is not None:
            call.on_2xx_retransmission(response)

    async def dial(
        self, uri: str, from_number: str, to_number: str, **options: Unpack[DialOptions]
    ) -> Call:
        """Call ``to_number`` through the server at ``uri`` (``sip:host:port``, with
        ``;transport=tcp|tls`` or ``sips:``, or a domain to look up: RFC 3263).

        Returns the answered call, or raises ``CallFailed`` with the final status (408
        after CANCEL when nobody answered within ``answer_timeout`` seconds).
        ``on_progress(status, reason)`` is called for each 180/183. ``proxy`` is an
        outbound proxy every INVITE goes through; ``offer_t38`` puts T.38 beside G.711
        in the INVITE (a 488/606 to it is retried with G.711 only); 3xx are followed
        ``max_redirects`` times. ``from_domain`` is our From URI's host (a carrier's
        domain when it authenticates us); ``tcp_over_mtu`` False keeps a large INVITE on
        UDP for a carrier without TCP.
        """
        how = Dialling(**options)
        how = replace(how, credentials=how.credentials or self.credentials)
        return await place_call(self, uri, from_number, to_number, how)

    # --- server side ------------------------------------------------------------------

    def _on_request(self, request: SipRequest, hop: Hop) -> None:
        method = request.method
        if method == "ACK":
            self._on_ack(request)
            return
        if self.transactions.absorb_retransmission(request):
            return
        server = self.transactions.server
        to_tag = request.to.tag
        if method == "CANCEL":
            self._on_cancel(request, hop)
        elif method == "INVITE" and not to_tag:
            self._on_invite(request, hop)
        elif method == "OPTIONS" and not to_tag:
            tx = server(request, hop)
            response = tx.response(200, to_tag=new_tag())
            response.headers.add("Allow", ALLOW)
            tx.respond(response)
        elif method == "PRACK":
            tx = server(request, hop)
            early = self._early.get((request.call_id, to_tag or ""))
            if early is None:
                tx.respond(tx.response(481))
            else:
                early.on_prack(request, tx)
        else:
            self._in_dialog(request, hop)

    def _in_dialog(self, request: SipRequest, hop: Hop) -> None:
        method = request.method
        tx = self.transactions.server(request, hop)
        call = self._calls.get((request.call_id, request.to.tag or ""))
        if call is None or (call.is_ended and method != "BYE"):
            tx.respond(tx.response(481))
        elif method == "BYE":
            call.on_bye(request, tx)
        elif method == "INVITE":
            self._spawn(call.on_reinvite(request, tx))
        elif method == "UPDATE":
            self._spawn(call.on_update(request, tx))
        elif method in ("OPTIONS", "INFO"):
            tx.respond(tx.response(200))  # SBC keep-alives, DTMF: nothing for a fax
        else:
            response = tx.response(405)
            response.headers.add("Allow", ALLOW)
            tx.respond(response)

    def _on_ack(self, request: SipRequest) -> None:
        if self.transactions.absorb_failure_ack(request):
            return
        call = self._calls.get((request.call_id, request.to.tag or ""))
        if call is not None:
            call.on_ack(request)

    def _on_cancel(self, request: SipRequest, hop: Hop) -> None:
        tx = self.transactions.server(request, hop)
        incoming = self._incoming.get(request.top_via.branch)
        if incoming is None:
            tx.respond(tx.response(481))
            return
        tx.respond(tx.response(200))
        incoming.on_cancel()  # a CANCEL that crosses our 200 changes nothing (§9.2)

    def _on_invite(self, request: SipRequest, hop: Hop) -> None:
        tx = self.transactions.server(request, hop)
        if self._handler is None:
            tx.respond(tx.response(480, to_tag=new_tag()))
            return
        unsupported = request.headers.tokens("Require") - {"100rel", "timer"}
        if unsupported:
            response = tx.response(420, to_tag=new_tag())
            response.headers.add("Unsupported", ", ".join(sorted(unsupported)))
            tx.respond(response)
            return
        tx.respond(tx.response(100))
        incoming = IncomingCall(self, request, hop, tx, prefer_100rel=self.prefer_100rel)
        branch = request.top_via.branch
        self._incoming[branch] = incoming
        self._spawn(self._run_handler(self._handler, incoming, branch))

    async def _run_handler(self, handler: Handler, incoming: IncomingCall, branch: str) -> None:
        try:
            await handler(incoming)
        except Exception:
            log.exception("call handler failed")
            if not incoming.decided:
                await incoming.reject(500)
            elif incoming.call is not None:
                await incoming.call.hangup()
        finally:
            if not incoming.decided:
                await incoming.reject(480)
            asyncio.get_running_loop().call_later(
                self.transactions.timeout, self._incoming.pop, branch, None
            )
