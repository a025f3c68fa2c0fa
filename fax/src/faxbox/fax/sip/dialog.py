"""Calls: SIP dialogs (RFC 3261 §12) and the media each one carries.

An established call is a ``Call``: G.711 audio over RTP, or T.38 over UDPTL after a
re-INVITE that either side may send (the other accepts with 200 + image SDP or refuses
with 488, and the call stays on audio); ``request_audio`` takes it back. BYE works both
ways. An INVITE waiting for a decision is an ``IncomingCall``: ``ring``, ``answer`` (a
``Call``) or ``reject``. Dialog state lives here (tags, CSeq, remote target, our ACKs
for 2xx retransmissions, the SDP version); transactions are the user agent's
``TransactionLayer``, reached through ``DialogHost``, the part of the user agent a
dialog needs.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt

from faxbox.fax.sip.message import (
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    new_branch,
    new_tag,
)
from faxbox.fax.sip.rtp import MediaClosed, RtpStream
from faxbox.fax.sip.sdp import (
    MediaDescription,
    MediaKind,
    SessionDescription,
    T38Params,
    answer_t38,
    audio_media,
    choose_codec,
    sdp_of,
    t38_media,
)
from faxbox.fax.sip.transaction import ServerTransaction, TransactionLayer
from faxbox.fax.sip.transport import Address
from faxbox.fax.sip.udptl import UdptlStream

log = logging.getLogger("faxbox.fax.sip.dialog")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"


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

    host: str
    pace: float
    jitter_prefill: int | None
    accept_t38: bool
    transactions: TransactionLayer

    def via(self, branch: str) -> str: ...

    def contact(self, user: str | None = None) -> str: ...

    def send(self, data: bytes, addr: Address) -> None: ...

    def remember(self, call: Call) -> None: ...

    def forget(self, call: Call) -> None:
        """Drop the dialog after 64·T1 (it answers retransmitted BYEs and 2xx until then)."""
        ...


class Call:
    """An established call (a dialog) and its media.

    Audio: ``send_audio``/``recv_audio`` move 160-sample blocks (``recv_audio`` is the
    clock: it returns once per 20/pace ms). T.38: ``send_ifp``/``recv_ifp``/``take_ifps``.
    ``events`` reports ringing, remote hangup and re-INVITE results; ``ended`` is set
    when the call is over for whatever reason.
    """

    def __init__(
        self,
        ua: DialogHost,
        *,
        call_id: str,
        local: NameAddr,
        remote: NameAddr,
        remote_target: str,
        remote_addr: Address,
        outgoing: bool,
        rtp: RtpStream,
        local_cseq: int,
    ) -> None:
        self.ua = ua
        self.call_id = call_id
        self.local = local
        self.remote = remote
        self.remote_target = remote_target
        self.remote_addr = remote_addr
        self.outgoing = outgoing
        self.rtp = rtp
        self.udptl: UdptlStream | None = None
        self.media_kind: MediaKind = "audio"
        self.t38_params: T38Params | None = None
        self.accept_t38 = ua.accept_t38
        self.events: asyncio.Queue[CallEvent] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.remote_hung_up = False
        self._cseq = local_cseq
        self._sdp_version = 0
        self._session_id = secrets.randbelow(2**31)
        self._acks: dict[int, bytes] = {}  # our ACK per INVITE CSeq, for 2xx retransmissions
        self._pending_2xx: dict[int, ServerTransaction] = {}
        self._reinvite_pending = False

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

    # --- signalling -------------------------------------------------------------------

    def _sdp(self, media: list[MediaDescription]) -> bytes:
        self._sdp_version += 1
        return SessionDescription(
            address=self.ua.host,
            media=media,
            session_id=self._session_id,
            version=self._sdp_version,
        ).serialize()

    def _next_cseq(self) -> int:
        self._cseq += 1
        return self._cseq

    def _request(self, method: str, cseq: int | None = None, body: bytes = b"") -> SipRequest:
        request = SipRequest(method=method, uri=self.remote_target)
        request.headers.add("Via", self.ua.via(new_branch()))
        request.headers.add("Max-Forwards", "70")
        request.headers.add("From", str(self.local))
        request.headers.add("To", str(self.remote))
        request.headers.add("Call-ID", self.call_id)
        request.headers.add("CSeq", f"{cseq if cseq is not None else self._next_cseq()} {method}")
        if method in ("INVITE",):
            request.headers.add("Contact", self.ua.contact())
            request.headers.add("Allow", ALLOW)
        if body:
            request.headers.add("Content-Type", "application/sdp")
        request.body = body
        return request

    def send_ack(self, cseq: int) -> None:
        """ACK the 2xx to our INVITE ``cseq`` (and keep it for that 2xx's retransmissions)."""
        ack = self._request("ACK", cseq=cseq).serialize()
        self._acks[cseq] = ack
        self.ua.send(ack, self.remote_addr)

    async def request_t38(self, params: T38Params | None = None) -> bool:
        """Send a re-INVITE offering T.38; True when accepted (media is then T.38)."""
        if self.is_ended:
            raise CallEnded(self.end_reason)
        if self.media_kind == "t38":
            return True
        if self._reinvite_pending:
            return False
        self._reinvite_pending = True
        udptl = await UdptlStream.open(self.ua.host, pace=self.pace)
        accepted = False
        try:
            response = await self._reinvite([t38_media(udptl.local_port, params)])
            if 200 <= response.status < 300:
                answer = sdp_of(response)
                media = answer.find("t38") if answer else None
                if answer is not None and media is not None:
                    params_in = T38Params.from_attributes(media.attributes)
                    udptl.connect(answer.endpoint(media), params_in.max_datagram)
                    self._switch_to_t38(udptl, params_in)
                    accepted = True
            if not accepted:
                self.events.put_nowait(
                    CallEvent(EventKind.REINVITE_REFUSED, self.media_kind, response.status)
                )
                log.info("T.38 re-INVITE refused: %s %s", response.status, response.reason)
            return accepted
        finally:
            self._reinvite_pending = False
            if not accepted:
                udptl.close()

    async def request_audio(self) -> bool:
        """Send a re-INVITE back to G.711 with the codec in use; True when accepted."""
        if self.is_ended:
            return False
        response = await self._reinvite([audio_media(self.rtp.local_port, [self.rtp.payload_type])])
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

    async def _reinvite(self, media: list[MediaDescription]) -> SipResponse:
        """Offer ``media`` in a re-INVITE; the final response (ACKed when 2xx, a 408 of
        our own when none came)."""
        body = self._sdp(media)
        cseq = self._next_cseq()
        request = self._request("INVITE", cseq=cseq, body=body)
        response = await self.ua.transactions.client(request, self.remote_addr).final_or_timeout()
        if 200 <= response.status < 300:
            self.send_ack(cseq)
        return response

    def _switch_to_t38(self, udptl: UdptlStream, params: T38Params) -> None:
        if self.udptl is not None and self.udptl is not udptl:
            self.udptl.close()
        self.udptl = udptl
        self.t38_params = params
        self.media_kind = "t38"
        self.events.put_nowait(CallEvent(EventKind.MEDIA_CHANGED, "t38", 200))

    async def on_reinvite(self, request: SipRequest, tx: ServerTransaction) -> None:
        if self._reinvite_pending:
            tx.respond(tx.response(491))
            return
        offer = sdp_of(request)
        t38 = offer.find("t38") if offer else None
        audio = offer.find("audio") if offer else None
        if offer is not None and t38 is not None and self.accept_t38:
            params = answer_t38(T38Params.from_attributes(t38.attributes))
            udptl = self.udptl or await UdptlStream.open(self.ua.host, pace=self.pace)
            udptl.connect(offer.endpoint(t38), params.max_datagram)
            body = self._sdp([t38_media(udptl.local_port, params)])
            self._send_2xx(request, tx, body)
            if self.media_kind != "t38" or udptl is not self.udptl:
                self._switch_to_t38(udptl, params)
            return
        if offer is not None and t38 is None and audio is not None:
            pt = choose_codec(audio)
            if pt is not None:  # back to audio (or a session refresh)
                self.rtp.connect(offer.endpoint(audio), pt)
                self._send_2xx(request, tx, self._sdp([audio_media(self.rtp.local_port, [pt])]))
                if self.media_kind != "audio":
                    self.media_kind = "audio"
                    self.events.put_nowait(CallEvent(EventKind.MEDIA_CHANGED, "audio", 200))
                return
        tx.respond(tx.response(488))
        self.events.put_nowait(CallEvent(EventKind.REINVITE_REFUSED, self.media_kind, 488))

    def _send_2xx(self, request: SipRequest, tx: ServerTransaction, body: bytes) -> None:
        response = tx.response(200, to_tag=self.local_tag, body=body)
        response.headers.add("Contact", self.ua.contact())
        self._pending_2xx[request.cseq.number] = tx
        tx.respond(response)

    def on_ack(self, request: SipRequest) -> None:
        tx = self._pending_2xx.pop(request.cseq.number, None)
        if tx is not None:
            tx.acked.set()

    def on_bye(self, request: SipRequest, addr: Address) -> None:
        tx = self.ua.transactions.server(request, addr)
        tx.respond(tx.response(200))
        if not self.is_ended:
            self.remote_hung_up = True
            self.events.put_nowait(CallEvent(EventKind.REMOTE_HANGUP, self.media_kind))
            self._end("remote hung up")

    def on_2xx_retransmission(self, response: SipResponse) -> None:
        ack = self._acks.get(response.cseq.number)
        if ack is not None:
            self.ua.send(ack, self.remote_addr)

    def _end(self, reason: str) -> None:
        if self.is_ended:
            return
        self.end_reason = reason
        self.ended.set()
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
        response = await self.ua.transactions.client(request, self.remote_addr).final_or_timeout()
        log.debug("BYE %s: %s %s", self.call_id, response.status, response.reason)


class IncomingCall:
    """An INVITE waiting for the handler's decision: ``answer()`` or ``reject(status)``."""

    def __init__(
        self, ua: DialogHost, request: SipRequest, addr: Address, tx: ServerTransaction
    ) -> None:
        self.ua = ua
        self.request = request
        self.addr = addr
        self.tx = tx
        self.offer = sdp_of(request)
        self.local_tag = new_tag()
        self.cancelled = asyncio.Event()
        self.decided = False
        self.call: Call | None = None

    @property
    def from_number(self) -> str:
        return _user_of(self.request.from_.uri)

    @property
    def to_number(self) -> str:
        return _user_of(self.request.to.uri) or _user_of(self.request.uri)

    def ring(self, status: int = 180) -> None:
        if not self.decided and not self.cancelled.is_set():
            self.tx.respond(self.tx.response(status, to_tag=self.local_tag))

    async def answer(self) -> Call:
        if self.cancelled.is_set():
            raise CallEnded("the caller cancelled")
        if self.decided:
            raise RuntimeError("already answered or rejected")
        offer = self.offer
        audio = offer.find("audio") if offer else None
        t38 = offer.find("t38") if offer else None
        pt = choose_codec(audio) if audio is not None else None
        if offer is None or (pt is None and t38 is None):
            await self.reject(488)
            raise CallEnded("no acceptable media in the offer")
        self.decided = True
        ua = self.ua
        rtp = await RtpStream.open(ua.host, pace=ua.pace, jitter_prefill=ua.jitter_prefill)
        to = self.request.to
        to.params["tag"] = self.local_tag
        contact = self.request.headers.get("Contact")
        target = NameAddr.parse(contact).uri if contact else self.request.from_.uri
        call = Call(
            ua,
            call_id=self.request.call_id,
            local=to,
            remote=self.request.from_,
            remote_target=target,
            remote_addr=self.addr,
            outgoing=False,
            rtp=rtp,
            local_cseq=secrets.randbelow(10000),
        )
        media: list[MediaDescription] = []
        if audio is not None and pt is not None:
            assert offer is not None
            rtp.connect(offer.endpoint(audio), pt)
            media.append(audio_media(rtp.local_port, [pt]))
        elif audio is not None:
            media.append(MediaDescription("audio", 0, audio.proto, audio.formats))
        if t38 is not None and pt is None and offer is not None:  # T.38 only offered
            params = answer_t38(T38Params.from_attributes(t38.attributes))
            udptl = await UdptlStream.open(ua.host, pace=ua.pace)
            udptl.connect(offer.endpoint(t38), params.max_datagram)
            media.append(t38_media(udptl.local_port, params))
            call.udptl, call.t38_params = udptl, params
            if pt is None:
                call.media_kind = "t38"
        elif t38 is not None:
            media.append(MediaDescription("image", 0, t38.proto, t38.formats))
        ua.remember(call)
        self.call = call
        call._send_2xx(self.request, self.tx, call._sdp(media))
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
        response = self.tx.response(status, reason, to_tag=self.local_tag)
        for name, value in headers:
            response.headers.add(name, value)
        self.tx.respond(response)


def _user_of(uri: str) -> str:
    try:
        return SipUri.parse(uri).user or ""
    except SipParseError:
        return ""
