"""An INVITE waiting for a decision: ``ring``, ``answer`` (a ``Call``) or ``reject``.

``ring`` sends 180, reliably (RFC 3262: ``Require: 100rel``, an RSeq, resent until the
caller's PRACK) when the caller requires it or, with the user agent's
``prefer_100rel``, supports it; ``answer`` waits for that PRACK before the 200 and
refuses an INVITE whose session interval is below our Min-SE with 422 (RFC 4028). The
200 copies the Record-Route set (the dialog's requests go back through the same
proxies), carries our session-timer decision, and answers every offered m-line in order:
G.711, or T.38 at once when the INVITE offers it too (and we accept T.38 on a clocked
line), the other stream refused with port 0.

The called number: ``called_numbers`` are the Request-URI's user part, then the To
header's: behind a registrar the Request-URI is our registered contact, and the number
dialled is only in To; a trunk that routes by DID puts it in the Request-URI.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from typing import Protocol

from faxbox.fax.sip.dialog import ALLOW, Call, CallEnded, DialogHost, mirror
from faxbox.fax.sip.message import NameAddr, SipParseError, SipRequest, SipUri, new_tag
from faxbox.fax.sip.reliable import RAck, resend_until, wants_100rel
from faxbox.fax.sip.routing import RouteSet
from faxbox.fax.sip.rtp import RtpStream
from faxbox.fax.sip.sdp import MediaDescription, choose_codec, sdp_of
from faxbox.fax.sip.session_timer import IntervalTooSmall, uas_negotiate
from faxbox.fax.sip.transaction import ServerTransaction
from faxbox.fax.sip.transport import Hop


class IncomingHost(DialogHost, Protocol):
    def remember_early(self, incoming: IncomingCall) -> None:
        """Route the PRACKs of this early dialog to ``incoming``."""
        ...


class IncomingCall:
    """An INVITE waiting for the handler's decision: ``answer()`` or ``reject(status)``."""

    def __init__(
        self,
        ua: IncomingHost,
        request: SipRequest,
        hop: Hop,
        tx: ServerTransaction,
        *,
        prefer_100rel: bool = False,
    ) -> None:
        self.ua = ua
        self.request = request
        self.hop = hop
        self.tx = tx
        self.offer = sdp_of(request)
        self.local_tag = new_tag()
        self.cancelled = asyncio.Event()
        self.decided = False
        self.call: Call | None = None
        self.reliable = wants_100rel(request, prefer_100rel)
        self._rseq = secrets.randbelow(2**30) + 1
        self._unacknowledged: int | None = None  # RSeq of our reliable 1xx awaiting PRACK
        self._pracked = asyncio.Event()
        self._resender: asyncio.Task[bool] | None = None

    @property
    def key(self) -> tuple[str, str]:
        """The early dialog's key, for its PRACKs."""
        return (self.request.call_id, self.local_tag)

    @property
    def from_number(self) -> str:
        return _user_of(self.request.from_.uri)

    @property
    def request_uri_number(self) -> str:
        return _user_of(self.request.uri)

    @property
    def to_header_number(self) -> str:
        return _user_of(self.request.to.uri)

    @property
    def called_numbers(self) -> list[str]:
        """The numbers this call may be for, in the order to look them up: the
        Request-URI's, then To's (each once)."""
        out: list[str] = []
        for number in (self.request_uri_number, self.to_header_number):
            if number and number not in out:
                out.append(number)
        return out

    @property
    def to_number(self) -> str:
        """The number dialled as the To header shows it (else the Request-URI's)."""
        return self.to_header_number or self.request_uri_number

    # --- provisional responses --------------------------------------------------------

    def ring(self, status: int = 180) -> None:
        if self.decided or self.cancelled.is_set():
            return
        response = self.tx.response(status, to_tag=self.local_tag)
        if not self.reliable:
            self.tx.respond(response)
            return
        if self._unacknowledged is not None:
            return  # §3: one unacknowledged reliable 1xx at a time
        self._rseq += 1
        response.headers.add("Require", "100rel")
        response.headers.add("RSeq", str(self._rseq))
        response.headers.add("Contact", self.ua.contact(transport=self.hop.transport))
        response.headers.add("Allow", ALLOW)
        self._unacknowledged = self._rseq
        self._pracked.clear()
        self.ua.remember_early(self)
        self.tx.respond(response)
        self._resender = asyncio.create_task(
            resend_until(
                self._pracked,
                self.tx.retransmitted,
                self.ua.transactions.t1,
                self.ua.transactions.timeout,
            )
        )

    def on_prack(self, request: SipRequest, tx: ServerTransaction) -> None:
        rack = RAck.parse(request.headers.get("RAck"))
        expected = (self._unacknowledged, self.request.cseq.number, "INVITE")
        if rack is None or (rack.rseq, rack.cseq, rack.method) != expected:
            tx.respond(tx.response(481))
            return
        tx.respond(tx.response(200))
        self._unacknowledged = None
        self._pracked.set()

    def stop(self) -> None:
        if self._resender is not None:
            self._resender.cancel()
        self._pracked.set()

    # --- the decision -----------------------------------------------------------------

    async def _wait_for_prack(self) -> bool:
        if self._unacknowledged is None:
            return True
        try:
            async with asyncio.timeout(self.ua.transactions.timeout):
                await self._pracked.wait()
        except TimeoutError:
            return False
        return self._unacknowledged is None

    async def answer(self) -> Call:
        if self.cancelled.is_set():
            raise CallEnded("the caller cancelled")
        if self.decided:
            raise RuntimeError("already answered or rejected")
        try:
            negotiated, timer_headers = uas_negotiate(self.request, self.ua.session_timer)
        except IntervalTooSmall as exc:
            self.decided = True
            response = self.tx.response(422, to_tag=self.local_tag)
            response.headers.add("Min-SE", str(exc.min_se))
            self.tx.respond(response)
            raise CallEnded("session interval below our Min-SE (422)") from exc
        offer = self.offer
        audio = offer.find("audio") if offer else None
        t38 = offer.find("t38") if offer else None
        pt = choose_codec(audio) if audio is not None else None
        if offer is None or (pt is None and t38 is None):
            await self.reject(488)
            raise CallEnded("no acceptable media in the offer")
        if not await self._wait_for_prack():
            await self.reject(504, "No PRACK")
            raise CallEnded("the caller never acknowledged our reliable 180 (PRACK)")
        if self.cancelled.is_set():
            raise CallEnded("the caller cancelled")
        self.decided = True
        self.stop()
        ua = self.ua
        rtp = await RtpStream.open(
            ua.host, pace=ua.pace, jitter_prefill=ua.jitter_prefill, ports=ua.media_ports
        )
        request = self.request
        to = request.to
        to.params["tag"] = self.local_tag
        contact = request.headers.get("Contact")
        target = NameAddr.parse(contact).uri if contact else request.from_.uri
        route_set = RouteSet.from_record_route(request, reverse=False)
        next_hop = await ua.hop_for(route_set.next_hop_uri(target), fallback=self.hop)
        call = Call(
            ua,
            call_id=request.call_id,
            local=to,
            remote=request.from_,
            remote_target=target,
            next_hop=next_hop,
            route_set=route_set,
            outgoing=False,
            rtp=rtp,
            local_cseq=secrets.randbelow(10000),
            remote_cseq=request.cseq.number,
            peer_allows=frozenset(request.headers.tokens("Allow")),
        )
        chosen: MediaDescription | None = None
        ours: MediaDescription | None = None
        assert offer is not None
        # T.38 offered in the INVITE itself: a fax endpoint takes it at once (no re-INVITE
        # later), when it accepts T.38 at all and its line has a clock.
        take_t38 = t38 is not None and (pt is None or (call.accept_t38 and ua.pace > 0))
        if audio is not None and pt is not None and not take_t38:
            chosen, ours = audio, call.take_audio(offer, audio, pt)
        elif t38 is not None:
            udptl, params, ours = await call.take_t38(offer, t38)
            call.udptl, call.t38_params, call.media_kind = udptl, params, "t38"
            chosen = t38
        assert chosen is not None
        assert ours is not None
        ua.remember(call)
        self.call = call
        call._send_2xx(request, self.tx, call.sdp(mirror(offer, chosen, ours)), timer_headers)
        call.start_timer(negotiated)
        return call

    async def reject(
        self,
        status: int = 486,
        reason: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Refuse the call; ``headers`` such as WWW-Authenticate or Retry-After go with it."""
        if self.decided or self.cancelled.is_set():
            return
        self.decided = True
        self.stop()
        response = self.tx.response(status, reason, to_tag=self.local_tag)
        for name, value in headers:
            response.headers.add(name, value)
        self.tx.respond(response)

    def on_cancel(self) -> None:
        """The caller gave up before we decided (the INVITE gets 487)."""
        if self.decided:
            return
        self.decided = True
        self.stop()
        self.cancelled.set()
        self.tx.respond(self.tx.response(487, to_tag=self.local_tag))


def _user_of(uri: str) -> str:
    try:
        return SipUri.parse(uri).user or ""
    except SipParseError:
        return ""
