"""Calls: SIP dialogs (RFC 3261 §12) and the media each one carries.

An established call is a ``Call``: G.711 audio over RTP, or T.38 over UDPTL after a
re-INVITE that either side may send (the other accepts with 200 + image SDP or refuses
with 488, and the call stays on audio); ``request_audio`` takes it back. BYE works both
ways. Dialog state lives here: tags, CSeqs, the remote target and the route set (every
request goes through the proxies that record-routed, ``routing``), our ACKs for 2xx
retransmissions, the SDP version, the session timer (``session_timer``).

What keeps a call up while a fax is on it:

- a re-INVITE or UPDATE from the far end is answered without touching T.30 when it
  changes nothing (a session refresh: same SDP answered with the same ``o=`` version),
  and re-targets RTP or UDPTL when it moves the far end's media address;
- glare (RFC 3261 §14.1): a re-INVITE of theirs while ours is pending gets 491; ours
  that gets 491 is sent again after the back-off of §14.1 (2.1 to 4 s when we own the
  Call-ID, up to 2 s otherwise), if it is still wanted (the far end may have switched to
  T.38 itself meanwhile);
- session timers: we refresh (UPDATE when the peer allows it, else a re-INVITE with
  the same SDP) or end a call whose refreshes stopped coming.

A dialog reaches its user agent only through ``DialogHost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Protocol

import numpy as np
import numpy.typing as npt

from faxbox.fax.sip.digest import Credentials, answer_challenge
from faxbox.fax.sip.message import (
    NameAddr,
    SipRequest,
    SipResponse,
)
from faxbox.fax.sip.ports import PortRange
from faxbox.fax.sip.routing import RouteSet
from faxbox.fax.sip.rtp import MediaClosed, RtpStream
from faxbox.fax.sip.sdp import (
    MediaDescription,
    MediaKind,
    SessionDescription,
    T38Params,
    answer_t38,
    audio_media,
    choose_codec,
    redundancy_for,
    sdp_of,
    t38_media,
)
from faxbox.fax.sip.session_timer import (
    IntervalTooSmall,
    Negotiated,
    SessionTimerSettings,
    min_se_of,
    uac_negotiated,
    uas_negotiate,
)
from faxbox.fax.sip.transaction import ClientTransaction, ServerTransaction, TransactionLayer
from faxbox.fax.sip.transport import Hop
from faxbox.fax.sip.udptl import UdptlStream

log = logging.getLogger("faxbox.fax.sip.dialog")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE"
SUPPORTED = "timer, 100rel"
GLARE_TRIES = 4


class CallEnded(ConnectionError):
    """Media was asked for on a call that has ended (and nothing is left to read)."""


class EventKind(StrEnum):
    REMOTE_HANGUP = "remote_hangup"
    MEDIA_CHANGED = "media_changed"  # a re-INVITE (ours or theirs) was accepted
    REINVITE_REFUSED = "reinvite_refused"  # ours was refused (488 ...) or we refused theirs


@dataclass(frozen=True, slots=True)
class CallEvent:
    kind: EventKind
    media: MediaKind
    status: int | None = None


class DialogHost(Protocol):
    """What a call needs from the user agent it belongs to."""

    host: str  # where media sockets bind
    pace: float
    jitter_prefill: int | None
    accept_t38: bool
    transactions: TransactionLayer
    media_ports: PortRange | None
    session_timer: SessionTimerSettings
    t38: T38Params  # what we offer and accept

    @property
    def media_address(self) -> str:
        """The address SDP announces (``advertised_address`` behind NAT)."""
        ...

    def contact(self, user: str | None = None, transport: str = "UDP") -> str: ...

    def send(self, data: bytes, hop: Hop) -> None: ...

    def stamp_via(self, request: SipRequest, hop: Hop) -> Hop:
        """Put our Via on ``request`` for ``hop``; the hop it really goes on (§18.1.1)."""
        ...

    def request(self, request: SipRequest, hop: Hop) -> ClientTransaction: ...

    async def hop_for(self, uri: str, fallback: Hop | None = None) -> Hop: ...

    def remember(self, call: Call) -> None: ...

    def forget(self, call: Call) -> None:
        """Drop the dialog after 64·T1 (it answers retransmitted BYEs and 2xx until then)."""
        ...


class Call:
    """An established call (a dialog) and its media.

    Audio: ``send_audio``/``recv_audio`` move 160-sample blocks (``recv_audio`` is the
    clock: it returns once per 20/pace ms). T.38: ``send_ifp``/``recv_ifp``/``take_ifps``.
    ``events`` reports remote hangup and re-INVITE results; ``ended`` is set when the
    call is over for whatever reason; ``refreshes`` counts session refreshes either way.
    """

    def __init__(
        self,
        ua: DialogHost,
        *,
        call_id: str,
        local: NameAddr,
        remote: NameAddr,
        remote_target: str,
        next_hop: Hop,
        outgoing: bool,
        rtp: RtpStream,
        local_cseq: int,
        route_set: RouteSet | None = None,
        remote_cseq: int = 0,
        peer_allows: frozenset[str] = frozenset(),
        credentials: Credentials | None = None,
    ) -> None:
        self.ua = ua
        self.call_id = call_id
        self.local = local
        self.remote = remote
        self.remote_target = remote_target
        self.route_set = route_set or RouteSet()
        self.next_hop = next_hop
        self.outgoing = outgoing
        self.rtp = rtp
        self.udptl: UdptlStream | None = None
        self.media_kind: MediaKind = "audio"
        self.t38_params: T38Params | None = None
        self.accept_t38 = ua.accept_t38
        self.peer_allows = peer_allows
        self.credentials = credentials
        self.events: asyncio.Queue[CallEvent] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.remote_hung_up = False
        self.refreshes = 0
        self.timer: Negotiated | None = None
        self._cseq = local_cseq
        self._remote_cseq = remote_cseq
        self._sdp_version = 0
        self._sdp_media: list[MediaDescription] | None = None
        self._session_id = secrets.randbelow(2**31)
        self._acks: dict[int, bytes] = {}  # our ACK per INVITE CSeq, for 2xx retransmissions
        self._pending_2xx: dict[int, ServerTransaction] = {}
        self._offer_pending = False  # our re-INVITE/UPDATE with an offer is out (glare)
        self._timer_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def local_tag(self) -> str:
        return self.local.tag or ""

    @property
    def remote_tag(self) -> str:
        return self.remote.tag or ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.call_id, self.local_tag)

    @property
    def is_ended(self) -> bool:
        return self.ended.is_set()

    @property
    def pace(self) -> float:
        return self.ua.pace

    @property
    def payload_type(self) -> int:
        return self.rtp.payload_type

    def is_on(self, kind: MediaKind) -> bool:
        return self.media_kind == kind

    @property
    def packets_received(self) -> int:
        """Media packets that arrived so far, RTP and UDPTL."""
        return self.rtp.packets_received + (self.udptl.packets_received if self.udptl else 0)

    # --- media ------------------------------------------------------------------------

    async def send_audio(self, block: npt.NDArray[np.int16]) -> None:
        """Send 20 ms of audio (a no-op once the call has ended)."""
        if self.is_ended or self.rtp.closed:
            return
        await self.rtp.send(block)

    async def recv_audio(self) -> npt.NDArray[np.int16]:
        """The next 20 ms heard; after the call ended, what is still buffered, then CallEnded."""
        try:
            return await self.rtp.recv()
        except MediaClosed as exc:
            raise CallEnded(self.end_reason or "call ended") from exc

    async def send_ifp(self, ifp: bytes, seq: int, copies: int = 1) -> None:
        if self.udptl is None:
            raise RuntimeError("the call is not on T.38")
        if self.is_ended or self.udptl.closed:
            return
        self.udptl.send_ifp(ifp, seq, copies)

    async def recv_ifp(self) -> tuple[int, bytes]:
        if self.udptl is None:
            raise RuntimeError("the call is not on T.38")
        try:
            return await self.udptl.recv_ifp()
        except MediaClosed as exc:
            raise CallEnded(self.end_reason or "call ended") from exc

    def take_ifps(self) -> list[tuple[int, bytes]]:
        return self.udptl.take_ifps() if self.udptl is not None else []

    async def open_udptl(self) -> UdptlStream:
        ua = self.ua
        return await UdptlStream.open(ua.host, pace=self.pace, ports=ua.media_ports)

    async def take_t38(
        self, offer: SessionDescription, t38: MediaDescription
    ) -> tuple[UdptlStream, T38Params, MediaDescription]:
        """Take the T.38 stream ``t38`` of ``offer``: our UDPTL stream (the one open, or a
        new one) sends to it, with the parameters we answer and our media line for them.
        The caller switches the call to it once the answer is on its way."""
        theirs = T38Params.from_attributes(t38.attributes)
        params = answer_t38(theirs, self.ua.t38)
        udptl = self.udptl or await self.open_udptl()
        # What we send is bounded by their T38FaxMaxDatagram and carries the error
        # recovery we agreed on.
        udptl.connect(offer.endpoint(t38), theirs.max_datagram, redundancy_for(params.udp_ec))
        return udptl, params, t38_media(udptl.local_port, params)

    def take_audio(
        self, offer: SessionDescription, audio: MediaDescription, pt: int
    ) -> MediaDescription:
        """Send our RTP to the audio stream ``audio`` of ``offer`` in payload type ``pt``;
        our media line for it."""
        self.rtp.connect(offer.endpoint(audio), pt)
        return audio_media(self.rtp.local_port, [pt])

    # --- building requests ------------------------------------------------------------

    def sdp(self, media: list[MediaDescription]) -> bytes:
        """Our SDP for ``media``; the ``o=`` version moves only when the media changed
        (RFC 3264 §8), so a refresh answered with the same media changes nothing."""
        if media != self._sdp_media:
            self._sdp_version += 1
            self._sdp_media = [
                MediaDescription(m.media, m.port, m.proto, list(m.formats), list(m.attributes))
                for m in media
            ]
        return SessionDescription(
            address=self.ua.media_address,
            media=media,
            session_id=self._session_id,
            version=self._sdp_version,
        ).serialize()

    def current_media(self) -> list[MediaDescription]:
        if self.media_kind == "t38" and self.udptl is not None:
            return [t38_media(self.udptl.local_port, self.t38_params or self.ua.t38)]
        return [audio_media(self.rtp.local_port, [self.rtp.payload_type])]

    def _next_cseq(self) -> int:
        self._cseq += 1
        return self._cseq

    def _request(self, method: str, cseq: int | None = None, body: bytes = b"") -> SipRequest:
        request = SipRequest(method=method, uri=self.remote_target)
        request.headers.add("Max-Forwards", "70")
        request.headers.add("From", str(self.local))
        request.headers.add("To", str(self.remote))
        request.headers.add("Call-ID", self.call_id)
        request.headers.add("CSeq", f"{cseq if cseq is not None else self._next_cseq()} {method}")
        self.route_set.apply(request, self.remote_target)
        if method in ("INVITE", "UPDATE"):
            request.headers.add("Contact", self.ua.contact(transport=self.next_hop.transport))
            request.headers.add("Allow", ALLOW)
            request.headers.add("Supported", SUPPORTED)
        if body:
            request.headers.add("Content-Type", "application/sdp")
        request.body = body
        return request

    async def _send(self, request: SipRequest) -> SipResponse:
        """Send an in-dialog request; the final response (a 401/407 answered once when
        we have credentials; a 408 of our own when none came)."""
        tx = self.ua.request(request, self.next_hop)
        response = await tx.final_or_timeout()
        if response.status in (401, 407) and self.credentials is not None:
            with contextlib.suppress(ValueError):
                answer = answer_challenge(response, self.credentials, request.method, request.uri)
                if answer is not None:
                    request.headers.set(*answer)
                    request.headers.set("CSeq", f"{self._next_cseq()} {request.method}")
                    response = await self.ua.request(request, self.next_hop).final_or_timeout()
        return response

    def send_ack(self, cseq: int) -> None:
        """ACK the 2xx to our INVITE ``cseq`` (and keep it for that 2xx's retransmissions)."""
        ack = self._request("ACK", cseq=cseq)
        hop = self.ua.stamp_via(ack, self.next_hop)
        data = ack.serialize()
        self._acks[cseq] = data
        self.ua.send(data, hop)

    # --- our re-INVITEs ---------------------------------------------------------------

    async def request_t38(self, params: T38Params | None = None) -> bool:
        """Send a re-INVITE offering T.38; True when accepted (media is then T.38)."""
        if self.is_ended:
            raise CallEnded(self.end_reason)
        if self.media_kind == "t38":
            return True
        if self._offer_pending:
            return False
        # Pending from now on (before the socket is open): a re-INVITE of theirs that
        # arrives meanwhile is glare and gets 491.
        self._offer_pending = True
        try:
            udptl = await self.open_udptl()
        except BaseException:
            self._offer_pending = False
            raise
        accepted = False
        try:
            response = await self._reinvite(
                lambda: [t38_media(udptl.local_port, params or self.ua.t38)],
                still_wanted=lambda: self.media_kind != "t38",
            )
            if response is None:  # the far end switched to T.38 itself meanwhile
                return self.is_on("t38")
            if 200 <= response.status < 300:
                answer = sdp_of(response)
                media = answer.find("t38") if answer else None
                if answer is not None and media is not None:
                    params_in = T38Params.from_attributes(media.attributes)
                    udptl.connect(
                        answer.endpoint(media),
                        params_in.max_datagram,
                        redundancy_for(params_in.udp_ec),
                    )
                    self._switch_to_t38(udptl, params_in)
                    accepted = True
            if not accepted:
                self.events.put_nowait(
                    CallEvent(EventKind.REINVITE_REFUSED, self.media_kind, response.status)
                )
                log.info("T.38 re-INVITE refused: %s %s", response.status, response.reason)
            return accepted
        finally:
            if not accepted:
                udptl.close()

    async def request_audio(self) -> bool:
        """Send a re-INVITE back to G.711 with the codec in use; True when accepted."""
        if self.is_ended:
            return False
        response = await self._reinvite(
            lambda: [audio_media(self.rtp.local_port, [self.rtp.payload_type])],
            still_wanted=lambda: self.media_kind != "audio",
        )
        if response is None:
            return self.is_on("audio")
        if not 200 <= response.status < 300:
            return False
        answer = sdp_of(response)
        audio = answer.find("audio") if answer else None
        if answer is not None and audio is not None:
            self.rtp.connect(answer.endpoint(audio), self.rtp.payload_type)
        if self.udptl is not None:
            self.udptl.close()
            self.udptl = None
        self.media_kind = "audio"
        return True

    def _glare_backoff(self) -> float:
        # §14.1: the owner of the Call-ID (the caller) waits longer.
        return random.uniform(2.1, 4.0) if self.outgoing else random.uniform(0.0, 2.0)

    async def _reinvite(
        self,
        media: Callable[[], list[MediaDescription]],
        still_wanted: Callable[[], bool] = lambda: True,
        headers: Callable[[], list[tuple[str, str]]] = list,
    ) -> SipResponse | None:
        """Offer ``media()`` in a re-INVITE; its final response (ACKed when 2xx; a 408 of
        our own when none came). A 491 is retried after the glare back-off while
        ``still_wanted()``; None when it stopped being wanted."""
        for attempt in range(GLARE_TRIES):
            if self.is_ended:
                raise CallEnded(self.end_reason)
            cseq = self._next_cseq()
            request = self._request("INVITE", cseq=cseq, body=self.sdp(media()))
            for name, value in headers():
                request.headers.add(name, value)
            self._offer_pending = True
            try:
                response = await self._send(request)
            finally:
                self._offer_pending = False
            if 200 <= response.status < 300:
                cseq = response.cseq.number
                self.send_ack(cseq)
                self._target_refresh(response)
                return response
            if response.status != 491 or attempt == GLARE_TRIES - 1:
                return response
            delay = self._glare_backoff()
            log.info("%s: re-INVITE glare (491), again in %.1f s", self.call_id, delay)
            await asyncio.sleep(delay)
            if not still_wanted():
                return None
        raise AssertionError("unreachable")

    def _switch_to_t38(self, udptl: UdptlStream, params: T38Params) -> None:
        if self.udptl is not None and self.udptl is not udptl:
            self.udptl.close()
        self.udptl = udptl
        self.t38_params = params
        self.media_kind = "t38"
        self.events.put_nowait(CallEvent(EventKind.MEDIA_CHANGED, "t38", 200))

    def _target_refresh(self, message: SipRequest | SipResponse) -> None:
        contact = message.headers.get("Contact")
        if contact:
            with contextlib.suppress(ValueError):
                self.remote_target = NameAddr.parse(contact).uri
        allow = message.headers.tokens("Allow")
        if allow:
            self.peer_allows = frozenset(allow)

    # --- session timer ----------------------------------------------------------------

    def start_timer(self, negotiated: Negotiated | None) -> None:
        """Run the session timer as ``negotiated`` (None: none)."""
        current = asyncio.current_task()
        if self._timer_task is not None and self._timer_task is not current:
            self._timer_task.cancel()
        self._timer_task = None
        if negotiated is not None:
            self.timer = negotiated
        if self.timer is None or self.is_ended:
            return
        self._timer_task = asyncio.create_task(self._run_timer(self.timer))

    async def _run_timer(self, negotiated: Negotiated) -> None:
        try:
            if negotiated.we_refresh:
                await asyncio.sleep(negotiated.refresh_after_s)
                await self.refresh()
            else:
                await asyncio.sleep(negotiated.expire_after_s)
                log.warning(
                    "%s: no session refresh within %s s; ending the call",
                    self.call_id,
                    negotiated.interval_s,
                )
                await self.hangup()
        except CallEnded:
            pass
        except Exception:
            log.exception("%s: session timer failed", self.call_id)

    def _timer_headers(self, interval: int) -> list[tuple[str, str]]:
        return [
            ("Session-Expires", f"{interval};refresher=uac"),
            ("Min-SE", str(self.ua.session_timer.min_se_s)),
        ]

    async def refresh(self) -> bool:
        """Refresh the session (RFC 4028) without changing the media; True when done."""
        interval = self.timer.interval_s if self.timer else self.ua.session_timer.expires_s
        for _ in range(3):
            if self.is_ended:
                return False
            if "update" in self.peer_allows:
                request = self._request("UPDATE")
                for name, value in self._timer_headers(interval):
                    request.headers.add(name, value)
                response: SipResponse | None = await self._send(request)
            else:
                response = await self._reinvite(
                    self.current_media, headers=partial(self._timer_headers, interval)
                )
            assert response is not None
            if 200 <= response.status < 300:
                self.refreshes += 1
                negotiated = uac_negotiated(response) or Negotiated(interval, True)
                self.start_timer(negotiated)
                return True
            if response.status == 422:
                interval = max(interval, min_se_of(response) or interval)
                continue
            if response.status in (408, 481):
                log.warning(
                    "%s: session refresh got %s; the dialog is gone", self.call_id, response.status
                )
                await self.hangup()
                return False
            if response.status == 491:
                await asyncio.sleep(self._glare_backoff())
                continue
            break
        self.start_timer(self.timer)  # keep trying at the next half interval
        return False

    def _answer_refresh(
        self, request: SipRequest, tx: ServerTransaction
    ) -> list[tuple[str, str]] | None:
        """The session-timer headers of our 2xx to a re-INVITE/UPDATE; None after a 422."""
        try:
            negotiated, headers = uas_negotiate(request, self.ua.session_timer)
        except IntervalTooSmall as exc:
            response = tx.response(422, to_tag=self.local_tag)
            response.headers.add("Min-SE", str(exc.min_se))
            tx.respond(response)
            return None
        self.refreshes += 1
        self.start_timer(negotiated)
        return headers

    # --- their requests ---------------------------------------------------------------

    def in_order(self, request: SipRequest, tx: ServerTransaction) -> bool:
        """§12.2.2: a request older than the last one is refused with 500."""
        number = request.cseq.number
        if self._remote_cseq and number <= self._remote_cseq:
            tx.respond(tx.response(500, "CSeq out of order", to_tag=self.local_tag))
            return False
        self._remote_cseq = number
        return True

    async def _answer_offer(
        self, offer: SessionDescription
    ) -> tuple[bytes, Callable[[], None]] | None:
        """Our answer to an offer in a re-INVITE/UPDATE and what to do once it is sent;
        None when nothing in it is acceptable (488)."""
        t38 = offer.find("t38")
        audio = offer.find("audio")
        if t38 is not None and self.accept_t38:
            udptl, params, ours = await self.take_t38(offer, t38)
            body = self.sdp(mirror(offer, t38, ours))

            def to_t38() -> None:
                if self.media_kind != "t38" or udptl is not self.udptl:
                    self._switch_to_t38(udptl, params)

            return body, to_t38
        if audio is not None:
            pt = choose_codec(audio)
            if pt is not None:  # back to audio, a moved media address, or a refresh
                body = self.sdp(mirror(offer, audio, self.take_audio(offer, audio, pt)))

                def to_audio() -> None:
                    if self.media_kind != "audio":
                        self.media_kind = "audio"
                        if self.udptl is not None:
                            self.udptl.close()
                            self.udptl = None
                        self.events.put_nowait(CallEvent(EventKind.MEDIA_CHANGED, "audio", 200))

                return body, to_audio
        return None

    async def on_reinvite(self, request: SipRequest, tx: ServerTransaction) -> None:
        if not self.in_order(request, tx):
            return
        if self._offer_pending:
            tx.respond(tx.response(491, to_tag=self.local_tag))
            return
        if self._pending_2xx:  # §14.2: their previous INVITE is not ACKed yet
            response = tx.response(500, to_tag=self.local_tag)
            response.headers.add("Retry-After", str(random.randint(0, 10)))
            tx.respond(response)
            return
        self._target_refresh(request)
        offer = sdp_of(request)
        if offer is None and not request.body:
            # No offer (a refresh from a late-offer UA): we offer what we have.
            headers = self._answer_refresh(request, tx)
            if headers is not None:
                self._send_2xx(request, tx, self.sdp(self.current_media()), headers)
            return
        answer = await self._answer_offer(offer) if offer is not None else None
        if answer is None:
            tx.respond(tx.response(488, to_tag=self.local_tag))
            self.events.put_nowait(CallEvent(EventKind.REINVITE_REFUSED, self.media_kind, 488))
            return
        headers = self._answer_refresh(request, tx)
        if headers is None:
            return
        body, apply = answer
        self._send_2xx(request, tx, body, headers)
        apply()

    async def on_update(self, request: SipRequest, tx: ServerTransaction) -> None:
        """RFC 3311: a session refresh, or an offer answered at once (no ACK)."""
        if not self.in_order(request, tx):
            return
        offer = sdp_of(request)
        apply: Callable[[], None] | None = None
        body = b""
        if offer is not None:
            if self._offer_pending:
                tx.respond(tx.response(491, to_tag=self.local_tag))
                return
            answer = await self._answer_offer(offer)
            if answer is None:
                tx.respond(tx.response(488, to_tag=self.local_tag))
                return
            body, apply = answer
        self._target_refresh(request)
        headers = self._answer_refresh(request, tx)
        if headers is None:
            return
        response = tx.response(200, to_tag=self.local_tag, body=body)
        response.headers.add("Contact", self.ua.contact(transport=self.next_hop.transport))
        for name, value in headers:
            response.headers.add(name, value)
        tx.respond(response)
        if apply is not None:
            apply()

    def _send_2xx(
        self,
        request: SipRequest,
        tx: ServerTransaction,
        body: bytes,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        response = tx.response(200, to_tag=self.local_tag, body=body)
        response.headers.add("Contact", self.ua.contact(transport=self.next_hop.transport))
        response.headers.add("Allow", ALLOW)
        response.headers.add("Supported", SUPPORTED)
        for name, value in headers:
            response.headers.add(name, value)
        self._pending_2xx[request.cseq.number] = tx
        tx.respond(response)

    def on_ack(self, request: SipRequest) -> None:
        tx = self._pending_2xx.pop(request.cseq.number, None)
        if tx is not None:
            tx.acked.set()

    def on_bye(self, request: SipRequest, tx: ServerTransaction) -> None:
        tx.respond(tx.response(200))
        if not self.is_ended:
            self.remote_hung_up = True
            self.events.put_nowait(CallEvent(EventKind.REMOTE_HANGUP, self.media_kind))
            self._end("remote hung up")

    def on_2xx_retransmission(self, response: SipResponse) -> None:
        ack = self._acks.get(response.cseq.number)
        if ack is not None:
            self.ua.send(ack, self.next_hop)

    def _end(self, reason: str) -> None:
        if self.is_ended:
            return
        self.end_reason = reason
        self.ended.set()
        if self._timer_task is not None and self._timer_task is not asyncio.current_task():
            self._timer_task.cancel()
        # No more datagrams in; what is buffered can still be read (recv_audio drains).
        self.rtp.close()
        if self.udptl is not None:
            self.udptl.close()
        for tx in self._pending_2xx.values():
            tx.acked.set()
        # Keep the dialog a while to answer retransmitted BYEs / ACK retransmitted 200s.
        self.ua.forget(self)

    async def hangup(self) -> None:
        """Send BYE (waits for its response, up to 64·T1) and end the call."""
        if self.is_ended:
            return
        request = self._request("BYE")
        self._end("hung up")
        response = await self._send(request)
        log.debug("BYE %s: %s %s", self.call_id, response.status, response.reason)


def mirror(
    offer: SessionDescription, chosen: MediaDescription, ours: MediaDescription
) -> list[MediaDescription]:
    """An answer with one m-line per offered one, in order (RFC 3264 §6): ``ours`` for
    ``chosen``, the others refused with port 0."""
    return [
        ours if m is chosen else MediaDescription(m.media, 0, m.proto, list(m.formats))
        for m in offer.media
    ]
