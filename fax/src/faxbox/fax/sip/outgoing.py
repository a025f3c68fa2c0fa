"""Placing a call: the INVITE and everything that can happen to it before the answer.

``place_call`` sends an INVITE and follows it to an answered ``Call`` or a
``CallFailed`` with the final status:

- where it goes (RFC 3263, ``resolve``): every hop of the target (or of the outbound
  proxy, preloaded as a Route) in order; a hop that cannot be reached, times out or
  answers 503 hands the INVITE to the next one;
- 401/407: answered with digest credentials (twice at most);
- 422 (RFC 4028): sent again with the far end's Min-SE;
- 3xx: the Contacts in q order, as new INVITEs, ``max_redirects`` at most;
- 488/606 to an INVITE that offered T.38 beside G.711: sent again with G.711 only;
- reliable provisional responses (RFC 3262): PRACKed as they come;
- no answer within ``answer_timeout``: CANCEL (and a 2xx that crosses it is ACKed and
  hung up), reported as 408.

The answer fixes the dialog: route set from the 2xx's Record-Route (reversed), remote
target from its Contact, the session timer from its Session-Expires, the media from its
SDP (T.38 when the far end picked the image stream of a combined offer).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol, TypedDict

from faxbox.fax.sip.dialog import ALLOW, SUPPORTED, Call, DialogHost
from faxbox.fax.sip.digest import Credentials, answer_challenge
from faxbox.fax.sip.message import (
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    new_call_id,
    new_tag,
)
from faxbox.fax.sip.reliable import RAck, rseq_of
from faxbox.fax.sip.resolve import ResolveError
from faxbox.fax.sip.routing import RouteSet
from faxbox.fax.sip.rtp import RtpStream
from faxbox.fax.sip.sdp import (
    PCMA,
    PCMU,
    MediaDescription,
    SessionDescription,
    T38Params,
    audio_media,
    choose_codec,
    redundancy_for,
    sdp_of,
    t38_media,
)
from faxbox.fax.sip.session_timer import min_se_of, request_headers, uac_negotiated
from faxbox.fax.sip.transaction import ClientTransaction
from faxbox.fax.sip.transport import Hop
from faxbox.fax.sip.udptl import UdptlStream

log = logging.getLogger("faxbox.fax.sip.outgoing")


class FailureKind(StrEnum):
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    BAD_NUMBER = "bad_number"
    UNAVAILABLE = "unavailable"  # 503 and other server trouble: try again later
    REJECTED = "rejected"  # 403, 603, failed authentication
    OTHER = "other"


_KIND_BY_STATUS = {
    486: FailureKind.BUSY,
    600: FailureKind.BUSY,
    408: FailureKind.NO_ANSWER,
    480: FailureKind.NO_ANSWER,
    487: FailureKind.NO_ANSWER,
    404: FailureKind.BAD_NUMBER,
    484: FailureKind.BAD_NUMBER,
    410: FailureKind.BAD_NUMBER,
    604: FailureKind.BAD_NUMBER,
    500: FailureKind.UNAVAILABLE,
    502: FailureKind.UNAVAILABLE,
    503: FailureKind.UNAVAILABLE,
    504: FailureKind.UNAVAILABLE,
    401: FailureKind.REJECTED,
    403: FailureKind.REJECTED,
    407: FailureKind.REJECTED,
    603: FailureKind.REJECTED,
}


class CallFailed(Exception):
    """The INVITE ended without a call: the final status and reason phrase.

    ``retry_after`` is the Retry-After of a 503 (seconds); ``local`` marks a status of
    our own making (no connection, no response at all, nobody answered in time).
    """

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        retry_after: int | None = None,
        local: bool = False,
        gave_up: bool = False,
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.local = local
        self.gave_up = gave_up  # nobody answered in time and we cancelled

    @property
    def kind(self) -> FailureKind:
        return _KIND_BY_STATUS.get(self.status, FailureKind.OTHER)

    @property
    def carrier_trouble(self) -> bool:
        """The carrier, not the number, failed: a server error (5xx), a timeout, no
        connection, 503 with Retry-After. Another carrier may well get through."""
        if self.gave_up:
            return False
        return 500 <= self.status < 600 or self.status == 408


class OutgoingHost(DialogHost, Protocol):
    user: str

    async def hops(self, uri: str) -> list[Hop]: ...


@dataclass(frozen=True, slots=True)
class Dialling:
    """How one call is placed (see ``UserAgent.dial``)."""

    answer_timeout: float = 60.0
    credentials: Credentials | None = None
    codecs: tuple[int, ...] = (PCMU, PCMA)
    display_name: str = ""
    on_progress: Callable[[int, str], None] | None = None
    proxy: str | None = None
    offer_t38: bool = False
    max_redirects: int = 3
    from_domain: str | None = None  # the From URI's host (a registrar's domain); ours if None
    tcp_over_mtu: bool = True  # a large INVITE over UDP may go by TCP (§18.1.1)


class DialOptions(TypedDict, total=False):
    """``Dialling``'s fields as keywords (``UserAgent.dial``); its defaults apply."""

    answer_timeout: float
    credentials: Credentials | None
    codecs: tuple[int, ...]
    display_name: str
    on_progress: Callable[[int, str], None] | None
    proxy: str | None
    offer_t38: bool
    max_redirects: int
    from_domain: str | None
    tcp_over_mtu: bool


class _Redirected(Exception):
    def __init__(self, response: SipResponse) -> None:
        super().__init__(f"{response.status} {response.reason}")
        self.response = response


def _retry_after(response: SipResponse) -> int | None:
    value = (response.headers.get("Retry-After") or "").split(";")[0].split("(")[0].strip()
    return int(value) if value.isdigit() else None


def _failed(response: SipResponse, tx: ClientTransaction | None = None) -> CallFailed:
    local = tx is not None and not tx.remote_answered
    return CallFailed(
        response.status, response.reason, retry_after=_retry_after(response), local=local
    )


def redirect_targets(response: SipResponse) -> list[str]:
    """The Contacts of a 3xx, highest q first (RFC 3261 §8.1.3.4)."""
    ranked: list[tuple[float, int, str]] = []
    for index, value in enumerate(response.headers.get_all("Contact")):
        try:
            contact = NameAddr.parse(value)
            SipUri.parse(contact.uri)
        except SipParseError:
            continue
        try:
            q = float(contact.params.get("q") or 1.0)
        except ValueError:
            q = 1.0
        ranked.append((-q, index, contact.uri))
    return [uri for _, _, uri in sorted(ranked)]


@dataclass
class _Attempt:
    """One INVITE (with its retries for auth, 422, no T.38) towards one request URI."""

    ua: OutgoingHost
    request_uri: str
    call_id: str
    local: NameAddr
    remote: NameAddr
    rtp: RtpStream
    how: Dialling
    deadline: float
    cseq: int = 0
    prackd: set[int] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    udptl: UdptlStream | None = None

    async def run(self) -> Call:
        how = self.how
        route_set = RouteSet.preloaded(how.proxy)
        try:
            hops = await self.ua.hops(route_set.next_hop_uri(self.request_uri))
        except (ResolveError, SipParseError) as exc:
            raise CallFailed(503, f"Service Unavailable ({exc})", local=True) from exc
        last: CallFailed | None = None
        for index, hop in enumerate(hops):
            if not how.tcp_over_mtu:
                hop = replace(hop, tcp_allowed=False)
            try:
                return await self._on_hop(hop, route_set)
            except CallFailed as exc:
                last = exc
                more = index + 1 < len(hops)
                if more and not exc.gave_up and (exc.status == 503 or exc.local):
                    log.info("INVITE via %s failed (%s); trying the next hop", hop, exc)
                    continue
                raise
        assert last is not None
        raise last

    def _offer(self, offer_t38: bool) -> bytes:
        media: list[MediaDescription] = [audio_media(self.rtp.local_port, self.how.codecs)]
        if offer_t38 and self.udptl is not None:
            media.append(t38_media(self.udptl.local_port, self.ua.t38))
        return SessionDescription(
            address=self.ua.media_address, media=media, session_id=secrets.randbelow(2**31)
        ).serialize()

    async def _on_hop(self, hop: Hop, route_set: RouteSet) -> Call:
        ua, how = self.ua, self.how
        offer_t38 = how.offer_t38 and ua.pace > 0
        if offer_t38 and self.udptl is None:
            self.udptl = await UdptlStream.open(ua.host, pace=ua.pace, ports=ua.media_ports)
        auth_headers: list[tuple[str, str]] = []
        challenges = 0
        session_expires: int | None = None
        while True:
            self.cseq += 1
            invite = SipRequest(method="INVITE", uri=self.request_uri, body=self._offer(offer_t38))
            h = invite.headers
            h.add("Max-Forwards", "70")
            for route in route_set.routes:
                h.add("Route", route)
            h.add("From", str(self.local))
            h.add("To", str(self.remote))
            h.add("Call-ID", self.call_id)
            h.add("CSeq", f"{self.cseq} INVITE")
            h.add("Contact", ua.contact(SipUri.parse(self.local.uri).user, hop.transport))
            h.add("Allow", ALLOW)
            h.add("Supported", SUPPORTED)
            for name, value in request_headers(ua.session_timer, session_expires):
                h.add(name, value)
            for name, value in auth_headers:
                h.add(name, value)
            h.add("Content-Type", "application/sdp")
            tx = ua.request(invite, hop)
            final, cancelled = await self._await_final(tx, invite)
            status = final.status
            if cancelled and 200 <= status < 300:  # answered as we gave up: end it
                call = await self._established(final, tx, route_set)
                await call.hangup()
                raise CallFailed(408, "No answer", gave_up=True)
            if status in (401, 407) and how.credentials is not None and challenges < 2:
                challenges += 1
                try:
                    answer = answer_challenge(final, how.credentials, "INVITE", self.request_uri)
                except ValueError as exc:
                    raise CallFailed(status, f"{final.reason} ({exc})") from exc
                if answer is not None:
                    auth_headers = [(n, v) for n, v in auth_headers if n != answer[0]]
                    auth_headers.append(answer)
                    continue
            if status == 422 and session_expires is None and (min_se_of(final) or 0) > 0:
                session_expires = min_se_of(final)
                continue
            if status in (488, 606) and offer_t38:
                log.info("%s to an offer with T.38: again with G.711 only", status)
                offer_t38 = False
                continue
            if 300 <= status < 400:
                raise _Redirected(final)
            if status >= 300 or status < 200:
                raise _failed(final, tx)
            return await self._established(final, tx, route_set)

    async def _await_final(
        self, tx: ClientTransaction, invite: SipRequest
    ) -> tuple[SipResponse, bool]:
        loop = asyncio.get_running_loop()
        cancelled = False
        while True:
            timeout = self.deadline - loop.time()
            try:
                if cancelled or timeout > 0:
                    async with asyncio.timeout(
                        self.ua.transactions.timeout + 1 if cancelled else max(timeout, 0.001)
                    ):
                        response = await tx.responses.get()
                else:
                    raise TimeoutError
            except TimeoutError:
                if cancelled:  # the peer never ended the INVITE after our CANCEL
                    tx.cancel()
                    raise CallFailed(
                        408, "No answer", local=not tx.remote_answered, gave_up=True
                    ) from None
                cancelled = True
                tx.cancel()  # no more INVITE retransmissions
                self._send_cancel(invite, tx.hop)
                continue
            if response.status < 200:
                if response.status in (180, 183) and self.how.on_progress is not None:
                    self.how.on_progress(response.status, response.reason)
                rseq = rseq_of(response)
                if rseq is not None and rseq not in self.prackd and response.to.tag:
                    self.prackd.add(rseq)
                    self._spawn(self._prack(response, rseq, tx.hop))
                continue
            if cancelled and response.status == 487:
                raise CallFailed(408, "No answer", gave_up=True)
            return response, cancelled

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _prack(self, provisional: SipResponse, rseq: int, invite_hop: Hop) -> None:
        """PRACK a reliable 1xx inside its early dialog (RFC 3262 §4)."""
        contact = provisional.headers.get("Contact")
        target = NameAddr.parse(contact).uri if contact else self.request_uri
        route_set = RouteSet.from_record_route(provisional, reverse=True)
        if not route_set and self.how.proxy:
            route_set = RouteSet.preloaded(self.how.proxy)
        self.cseq += 1
        prack = SipRequest(method="PRACK", uri=target)
        prack.headers.add("Max-Forwards", "70")
        prack.headers.add("From", str(self.local))
        prack.headers.add("To", provisional.headers.get("To") or "")
        prack.headers.add("Call-ID", self.call_id)
        prack.headers.add("CSeq", f"{self.cseq} PRACK")
        prack.headers.add("RAck", str(RAck(rseq, provisional.cseq.number, "INVITE")))
        route_set.apply(prack, target)
        hop = await self.ua.hop_for(route_set.next_hop_uri(target), fallback=invite_hop)
        response = await self.ua.request(prack, hop).final_or_timeout()
        if not 200 <= response.status < 300:
            log.info("PRACK %s: %s %s", rseq, response.status, response.reason)

    def _send_cancel(self, invite: SipRequest, hop: Hop) -> None:
        cancel = SipRequest(method="CANCEL", uri=invite.uri)
        cancel.headers.add("Via", invite.headers.get_all("Via")[0])  # same branch (9.1)
        cancel.headers.add("Max-Forwards", "70")
        for route in invite.headers.get_all("Route"):
            cancel.headers.add("Route", route)
        cancel.headers.add("From", invite.headers.get("From") or "")
        cancel.headers.add("To", invite.headers.get("To") or "")
        cancel.headers.add("Call-ID", invite.call_id)
        cancel.headers.add("CSeq", f"{invite.cseq.number} CANCEL")
        self.ua.transactions.client(cancel, hop)

    async def _established(
        self, final: SipResponse, tx: ClientTransaction, preloaded: RouteSet
    ) -> Call:
        contact = final.headers.get("Contact")
        target = NameAddr.parse(contact).uri if contact else str(final.to.uri)
        route_set = RouteSet.from_record_route(final, reverse=True)
        next_hop = await self.ua.hop_for(route_set.next_hop_uri(target), fallback=tx.hop)
        call = Call(
            self.ua,
            call_id=self.call_id,
            local=self.local,
            remote=final.to,
            remote_target=target,
            next_hop=next_hop,
            route_set=route_set,
            outgoing=True,
            rtp=self.rtp,
            local_cseq=self.cseq,
            peer_allows=frozenset(final.headers.tokens("Allow")),
            credentials=self.how.credentials,
        )
        self.ua.remember(call)
        call.send_ack(final.cseq.number)
        answer = sdp_of(final)
        audio = answer.find("audio") if answer else None
        t38 = answer.find("t38") if answer else None
        if answer is not None and t38 is not None and self.udptl is not None:
            params = T38Params.from_attributes(t38.attributes)
            self.udptl.connect(
                answer.endpoint(t38), params.max_datagram, redundancy_for(params.udp_ec)
            )
            call.udptl, call.t38_params, call.media_kind = self.udptl, params, "t38"
            self.udptl = None
        if answer is not None and audio is not None:
            pt = choose_codec(audio)
            if pt is not None:
                self.rtp.connect(answer.endpoint(audio), pt)
        elif call.media_kind != "t38":
            log.warning("200 OK without usable audio SDP; the call has no media")
        call.start_timer(uac_negotiated(final))
        return call

    def close(self) -> None:
        if self.udptl is not None:
            self.udptl.close()
            self.udptl = None


async def place_call(
    ua: OutgoingHost, uri: str, from_number: str, to_number: str, how: Dialling
) -> Call:
    """Call ``to_number`` through the server at ``uri`` (see the module's docstring)."""
    peer = SipUri.parse(uri)
    request_uri = str(
        SipUri(
            host=peer.host, user=to_number, port=peer.port, params=peer.params, scheme=peer.scheme
        )
    )
    call_id = new_call_id(ua.media_address)
    domain = how.from_domain or ua.media_address
    local = NameAddr(f"sip:{from_number}@{domain}", how.display_name, {"tag": new_tag()})
    rtp = await RtpStream.open(
        ua.host, pace=ua.pace, jitter_prefill=ua.jitter_prefill, ports=ua.media_ports
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + how.answer_timeout
    tried = {request_uri}
    redirects = 0
    try:
        while True:
            attempt = _Attempt(
                ua, request_uri, call_id, local, NameAddr(request_uri), rtp, how, deadline
            )
            try:
                return await attempt.run()
            except _Redirected as redirect:
                response = redirect.response
                targets = [t for t in redirect_targets(response) if t not in tried]
                redirects += 1
                if not targets or redirects > how.max_redirects:
                    raise CallFailed(
                        response.status, f"{response.reason} (redirect not followed)"
                    ) from None
                request_uri = targets[0]
                tried.add(request_uri)
                log.info("redirected (%s) to %s", response.status, request_uri)
            finally:
                attempt.close()
    except BaseException:
        rtp.close()
        raise
