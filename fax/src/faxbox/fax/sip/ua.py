"""A SIP user agent over UDP for fax calls (RFC 3261 subset), and the fax pump.

One ``UserAgent`` owns one UDP socket. It can ``dial`` (INVITE, provisional responses,
200 → ACK; failures as ``CallFailed``; CANCEL when nobody answers in time; digest auth
on 401/407) and ``listen`` for incoming INVITEs (the handler answers or rejects). Each
established call is a ``Call``: G.711 audio over RTP, or T.38 over UDPTL after a
re-INVITE that either side may send (the other accepts with 200 + image SDP or refuses
with 488, and the call stays on audio). BYE works both ways.

Reliability over UDP is the RFC 3261 timer scheme kept simple: requests are resent at
T1, 2·T1, ... (non-INVITE capped at T2) until a response arrives or 64·T1 passes; final
responses to INVITE are resent the same way until the ACK arrives; a retransmitted
request is answered with the last response sent for it. No proxies, no Route sets, no
PRACK, no TCP/TLS: this talks to one trunk or peer directly.

``run_fax_over_call`` connects a spandsp ``FaxSession`` / ``T38Session`` to a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from faxbox.fax.outcome import FaxOutcome
from faxbox.fax.session import FaxSession, T38Session
from faxbox.fax.sip.message import (
    PCMA,
    PCMU,
    REASONS,
    Credentials,
    MediaDescription,
    MediaKind,
    NameAddr,
    SessionDescription,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    T38Params,
    Via,
    answer_t38,
    audio_media,
    choose_codec,
    digest_authorization,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    t38_media,
)
from faxbox.fax.sip.rtp import Clock, MediaClosed, RtpStream, _DatagramSink, open_udp, silence
from faxbox.fax.sip.udptl import UdptlStream

log = logging.getLogger("faxbox.fax.sip")

T1 = 0.5  # RFC 3261 round-trip estimate
T2 = 4.0
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"


# --- Errors and events ------------------------------------------------------------------


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
    """The INVITE ended without a call: the final status and reason phrase."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason

    @property
    def kind(self) -> FailureKind:
        return _KIND_BY_STATUS.get(self.status, FailureKind.OTHER)


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


# --- Transactions -----------------------------------------------------------------------


class _ClientTransaction:
    def __init__(self, ua: UserAgent, request: SipRequest, addr: tuple[str, int]) -> None:
        self.ua = ua
        self.request = request
        self.addr = addr
        self.invite = request.method == "INVITE"
        self.key = (request.top_via.branch, request.method)
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()
        self.got_response = False
        self.final: SipResponse | None = None
        self.ack: bytes | None = None
        self._task = asyncio.create_task(self._retransmit())

    async def _retransmit(self) -> None:
        await self._retransmit_loop()
        if self.final is None:  # timed out; stopping retransmissions (cancel()) keeps it
            asyncio.get_running_loop().call_later(
                64 * self.ua.t1, self.ua._client_transactions.pop, self.key, None
            )

    async def _retransmit_loop(self) -> None:
        data = self.request.serialize()
        interval = self.ua.t1
        deadline = asyncio.get_running_loop().time() + 64 * self.ua.t1
        self.ua.send_raw(data, self.addr)
        while True:
            await asyncio.sleep(interval)
            if self.final is not None:
                return
            if asyncio.get_running_loop().time() >= deadline:
                if not self.got_response:
                    self.responses.put_nowait(_timeout_response(self.request))
                return
            if self.invite:
                if self.got_response:
                    continue  # provisional received: wait for the final (timer C is ours)
                interval *= 2  # timer A
            elif self.got_response:
                interval = self.ua.t2  # timer E after a provisional
            else:
                interval = min(interval * 2, self.ua.t2)
            self.ua.send_raw(data, self.addr)

    def on_response(self, response: SipResponse) -> None:
        self.got_response = True
        if response.status >= 200:
            if self.final is not None:  # a retransmitted final response
                if self.ack is not None:
                    self.ua.send_raw(self.ack, self.addr)
                elif self.invite:  # 2xx: the dialog ACKs it (13.2.2.4)
                    self.ua._on_2xx_retransmission(response)
                return
            self.final = response
            if self.invite and response.status >= 300:
                # ACK for a non-2xx final response belongs to the transaction (17.1.1.3).
                self.ack = _ack_for_failure(self.request, response).serialize()
                self.ua.send_raw(self.ack, self.addr)
            # Keep the entry for 32 s (timer D/K) to absorb retransmissions.
            asyncio.get_running_loop().call_later(
                64 * self.ua.t1, self.ua._client_transactions.pop, self.key, None
            )
        self.responses.put_nowait(response)

    async def final_response(self) -> SipResponse:
        """Wait for the final response (provisional ones are skipped)."""
        while True:
            response = await self.responses.get()
            if response.status >= 200:
                return response

    def cancel(self) -> None:
        self._task.cancel()


def _timeout_response(request: SipRequest) -> SipResponse:
    response = SipResponse(status=408, reason="Request Timeout")
    response.headers = request.headers.copy()
    return response


def _ack_for_failure(invite: SipRequest, response: SipResponse) -> SipRequest:
    ack = SipRequest(method="ACK", uri=invite.uri)
    ack.headers.add("Via", invite.headers.get_all("Via")[0])
    ack.headers.add("Max-Forwards", "70")
    ack.headers.add("From", invite.headers.get("From") or "")
    ack.headers.add("To", response.headers.get("To") or "")
    ack.headers.add("Call-ID", invite.call_id)
    ack.headers.add("CSeq", f"{invite.cseq.number} ACK")
    return ack


class _ServerTransaction:
    """Remembers the last response to a request; resends final INVITE responses until ACK."""

    def __init__(self, ua: UserAgent, request: SipRequest, addr: tuple[str, int]) -> None:
        self.ua = ua
        self.request = request
        self.addr = addr
        self.key = (request.top_via.branch, request.method)
        self.last: bytes | None = None
        self.final_status: int | None = None
        self.acked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def respond(self, response: SipResponse) -> None:
        self.last = response.serialize()
        self.ua.send_raw(self.last, self.addr)
        if response.status >= 200 and self.final_status is None:
            self.final_status = response.status
            if self.request.method == "INVITE":
                self._task = asyncio.create_task(self._retransmit_until_ack())
            else:
                self._forget_later()

    async def _retransmit_until_ack(self) -> None:
        interval = self.ua.t1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 64 * self.ua.t1
        try:
            while loop.time() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.acked.wait(), interval)
                if self.acked.is_set():
                    return
                if self.last is not None:
                    self.ua.send_raw(self.last, self.addr)
                interval = min(interval * 2, self.ua.t2)
            log.info("no ACK for %s %s", self.final_status, self.request.call_id)
        finally:
            self._forget_later()

    def _forget_later(self) -> None:
        asyncio.get_running_loop().call_later(
            64 * self.ua.t1, self.ua._server_transactions.pop, self.key, None
        )

    def retransmitted(self) -> None:
        if self.last is not None:
            self.ua.send_raw(self.last, self.addr)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


# --- Calls ------------------------------------------------------------------------------


class Call:
    """An established call (a dialog) and its media.

    Audio: ``send_audio``/``recv_audio`` move 160-sample blocks (``recv_audio`` is the
    clock: it returns once per 20/pace ms). T.38: ``send_ifp``/``recv_ifp``/``take_ifps``.
    ``events`` reports ringing, remote hangup and re-INVITE results; ``ended`` is set
    when the call is over for whatever reason.
    """

    def __init__(
        self,
        ua: UserAgent,
        *,
        call_id: str,
        local: NameAddr,
        remote: NameAddr,
        remote_target: str,
        remote_addr: tuple[str, int],
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
        self._pending_2xx: dict[int, _ServerTransaction] = {}
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

    def _send_ack(self, cseq: int) -> None:
        ack = self._request("ACK", cseq=cseq).serialize()
        self._acks[cseq] = ack
        self.ua.send_raw(ack, self.remote_addr)

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
            body = self._sdp([t38_media(udptl.local_port, params)])
            cseq = self._next_cseq()
            request = self._request("INVITE", cseq=cseq, body=body)
            tx = self.ua._start_client(request, self.remote_addr)
            try:
                async with asyncio.timeout(64 * self.ua.t1 + 1):
                    response = await tx.final_response()
            except TimeoutError:
                response = _timeout_response(request)
            if 200 <= response.status < 300:
                self._send_ack(cseq)
                answer = _parse_sdp(response)
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

    def _switch_to_t38(self, udptl: UdptlStream, params: T38Params) -> None:
        if self.udptl is not None and self.udptl is not udptl:
            self.udptl.close()
        self.udptl = udptl
        self.t38_params = params
        self.media_kind = "t38"
        self.events.put_nowait(CallEvent(EventKind.MEDIA_CHANGED, "t38", 200))

    async def _on_reinvite(self, request: SipRequest, tx: _ServerTransaction) -> None:
        if self._reinvite_pending:
            tx.respond(self.ua.response(request, 491))
            return
        offer = _parse_sdp(request)
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
        tx.respond(self.ua.response(request, 488))
        self.events.put_nowait(CallEvent(EventKind.REINVITE_REFUSED, self.media_kind, 488))

    def _send_2xx(self, request: SipRequest, tx: _ServerTransaction, body: bytes) -> None:
        response = self.ua.response(request, 200, to_tag=self.local_tag, body=body)
        response.headers.add("Contact", self.ua.contact())
        self._pending_2xx[request.cseq.number] = tx
        tx.respond(response)

    def _on_ack(self, request: SipRequest) -> None:
        tx = self._pending_2xx.pop(request.cseq.number, None)
        if tx is not None:
            tx.acked.set()

    def _on_bye(self, request: SipRequest, addr: tuple[str, int]) -> None:
        tx = self.ua._new_server_transaction(request, addr)
        tx.respond(self.ua.response(request, 200))
        if not self.is_ended:
            self.remote_hung_up = True
            self.events.put_nowait(CallEvent(EventKind.REMOTE_HANGUP, self.media_kind))
            self._end("remote hung up")

    def _on_2xx_retransmission(self, response: SipResponse) -> None:
        ack = self._acks.get(response.cseq.number)
        if ack is not None:
            self.ua.send_raw(ack, self.remote_addr)

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
        asyncio.get_running_loop().call_later(64 * self.ua.t1, self.ua._calls.pop, self.key, None)

    async def hangup(self) -> None:
        """Send BYE (waits for its response, up to 64·T1) and end the call."""
        if self.is_ended:
            return
        request = self._request("BYE")
        self._end("hung up")
        tx = self.ua._start_client(request, self.remote_addr)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(64 * self.ua.t1 + 1):
                response = await tx.final_response()
            log.debug("BYE %s: %s %s", self.call_id, response.status, response.reason)


def _parse_sdp(message: SipRequest | SipResponse) -> SessionDescription | None:
    if not message.body or message.content_type not in ("application/sdp", ""):
        return None
    try:
        return SessionDescription.parse(message.body)
    except (SipParseError, ValueError, UnicodeDecodeError):
        return None


class IncomingCall:
    """An INVITE waiting for the handler's decision: ``answer()`` or ``reject(status)``."""

    def __init__(
        self, ua: UserAgent, request: SipRequest, addr: tuple[str, int], tx: _ServerTransaction
    ) -> None:
        self.ua = ua
        self.request = request
        self.addr = addr
        self.tx = tx
        self.offer = _parse_sdp(request)
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
            self.tx.respond(self.ua.response(self.request, status, to_tag=self.local_tag))

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
        ua._calls[call.key] = call
        self.call = call
        call._send_2xx(self.request, self.tx, call._sdp(media))
        return call

    async def reject(self, status: int = 486, reason: str | None = None) -> None:
        if self.decided or self.cancelled.is_set():
            return
        self.decided = True
        self.tx.respond(self.ua.response(self.request, status, reason, to_tag=self.local_tag))


def _user_of(uri: str) -> str:
    try:
        return SipUri.parse(uri).user or ""
    except SipParseError:
        return ""


Handler = Callable[[IncomingCall], Awaitable[None]]


# --- The user agent ---------------------------------------------------------------------


class UserAgent(_DatagramSink):
    """SIP over one UDP socket: ``dial`` out, ``listen`` for calls in.

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
    ) -> None:
        self.host = host
        self.port = 0
        self.user = user
        self.pace = pace
        self.t1 = t1
        self.t2 = t2
        self.credentials = credentials
        self.accept_t38 = accept_t38
        self.jitter_prefill = jitter_prefill
        self.user_agent = user_agent
        self._transport: asyncio.DatagramTransport | None = None
        self._handler: Handler | None = None
        self._client_transactions: dict[tuple[str, str], _ClientTransaction] = {}
        self._server_transactions: dict[tuple[str, str], _ServerTransaction] = {}
        self._incoming: dict[str, IncomingCall] = {}  # by INVITE branch
        self._calls: dict[tuple[str, str], Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent: list[bytes] = []  # the last messages sent and received, for tests/debugging
        self.received: list[bytes] = []

    @classmethod
    async def start(cls, host: str = "127.0.0.1", port: int = 0, **options: Any) -> UserAgent:
        """A user agent listening on host:port (0: a free port); options as for __init__."""
        ua = cls(host, **options)
        ua._transport = await open_udp(ua, host, port)
        ua.port = int(ua._transport.get_extra_info("sockname")[1])
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
        for tx in self._client_transactions.values():
            tx.cancel()
        for stx in self._server_transactions.values():
            stx.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    def listen(self, handler: Handler) -> None:
        """Route incoming INVITEs to ``handler`` (one task per call)."""
        self._handler = handler

    # --- transport --------------------------------------------------------------------

    def send_raw(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is None:
            return
        self._keep(self.sent, data)
        self._transport.sendto(data, addr)

    @staticmethod
    def _keep(log_list: list[bytes], data: bytes) -> None:
        log_list.append(data)
        if len(log_list) > 200:
            del log_list[:100]

    def via(self, branch: str) -> str:
        return str(Via(self.host, self.port, "UDP", {"branch": branch, "rport": None}))

    def contact(self, user: str | None = None) -> str:
        return f"<sip:{user or self.user}@{self.host}:{self.port}>"

    def response(
        self,
        request: SipRequest,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        body: bytes = b"",
    ) -> SipResponse:
        response = SipResponse(status=status, reason=reason or REASONS.get(status, "Unknown"))
        for via in request.headers.get_all("Via"):
            response.headers.add("Via", via)
        response.headers.add("From", request.headers.get("From") or "")
        to = request.to
        if to_tag and not to.tag and status > 100:
            to.params["tag"] = to_tag
        response.headers.add("To", str(to))
        response.headers.add("Call-ID", request.call_id)
        response.headers.add("CSeq", str(request.cseq))
        response.headers.add("Server", self.user_agent)
        if body:
            response.headers.add("Content-Type", "application/sdp")
        response.body = body
        return response

    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # keep-alive
        try:
            message = parse_message(data)
            self._keep(self.received, data)
            if isinstance(message, SipResponse):
                self._on_response(message)
            else:
                self._on_request(message, addr)
        except (SipParseError, ValueError) as exc:
            log.info("dropped a bad SIP datagram from %s: %s", addr, exc)
        except Exception:  # never let one message take the socket down
            log.exception("failed to handle a SIP datagram from %s", addr)

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

    # --- client side ------------------------------------------------------------------

    def _start_client(self, request: SipRequest, addr: tuple[str, int]) -> _ClientTransaction:
        request.headers.set("User-Agent", self.user_agent)
        tx = _ClientTransaction(self, request, addr)
        self._client_transactions[tx.key] = tx
        return tx

    def _on_response(self, response: SipResponse) -> None:
        key = (response.top_via.branch, response.cseq.method)
        tx = self._client_transactions.get(key)
        if tx is not None:
            tx.on_response(response)
            return
        if response.cseq.method == "INVITE" and 200 <= response.status < 300:
            self._on_2xx_retransmission(response)

    def _on_2xx_retransmission(self, response: SipResponse) -> None:
        call = self._calls.get((response.call_id, response.from_.tag or ""))
        if call is not None:
            call._on_2xx_retransmission(response)

    async def dial(
        self,
        uri: str,
        from_number: str,
        to_number: str,
        *,
        answer_timeout: float = 60.0,
        credentials: Credentials | None = None,
        codecs: tuple[int, ...] = (PCMU, PCMA),
        display_name: str = "",
        on_progress: Callable[[int, str], None] | None = None,
    ) -> Call:
        """Call ``to_number`` through the peer at ``uri`` (``sip:host:port``).

        Returns the answered call, or raises ``CallFailed`` with the final status (408
        after CANCEL when nobody answered within ``answer_timeout`` seconds).
        ``on_progress(status, reason)`` is called for each 180/183.
        """
        peer = SipUri.parse(uri)
        addr = (peer.host, peer.port or 5060)
        request_uri = str(SipUri(host=peer.host, user=to_number, port=peer.port))
        credentials = credentials or self.credentials
        call_id = new_call_id(self.host)
        local = NameAddr(f"sip:{from_number}@{self.host}", display_name, {"tag": new_tag()})
        remote = NameAddr(request_uri)
        rtp = await RtpStream.open(self.host, pace=self.pace, jitter_prefill=self.jitter_prefill)
        try:
            return await self._invite(
                request_uri,
                addr,
                call_id,
                local,
                remote,
                rtp,
                codecs,
                credentials,
                answer_timeout,
                on_progress,
            )
        except BaseException:
            rtp.close()
            raise

    async def _invite(
        self,
        request_uri: str,
        addr: tuple[str, int],
        call_id: str,
        local: NameAddr,
        remote: NameAddr,
        rtp: RtpStream,
        codecs: tuple[int, ...],
        credentials: Credentials | None,
        answer_timeout: float,
        on_progress: Callable[[int, str], None] | None,
    ) -> Call:
        session_id = secrets.randbelow(2**31)
        body = SessionDescription(
            address=self.host, media=[audio_media(rtp.local_port, codecs)], session_id=session_id
        ).serialize()
        cseq = 0
        auth_headers: list[tuple[str, str]] = []
        challenges = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + answer_timeout
        while True:
            cseq += 1
            invite = SipRequest(method="INVITE", uri=request_uri, body=body)
            h = invite.headers
            h.add("Via", self.via(new_branch()))
            h.add("Max-Forwards", "70")
            h.add("From", str(local))
            h.add("To", str(remote))
            h.add("Call-ID", call_id)
            h.add("CSeq", f"{cseq} INVITE")
            h.add("Contact", self.contact(SipUri.parse(local.uri).user))
            h.add("Allow", ALLOW)
            for name, value in auth_headers:
                h.add(name, value)
            h.add("Content-Type", "application/sdp")
            tx = self._start_client(invite, addr)
            final, cancelled = await self._await_final(tx, invite, addr, deadline, on_progress)
            if cancelled and 200 <= final.status < 300:  # answered as we gave up: end it
                call = self._established(final, call_id, local, rtp, addr, cseq)
                await call.hangup()
                raise CallFailed(408, "No answer")
            if final.status in (401, 407) and credentials is not None and challenges < 2:
                challenges += 1
                header = "WWW-Authenticate" if final.status == 401 else "Proxy-Authenticate"
                answer = "Authorization" if final.status == 401 else "Proxy-Authorization"
                challenge = final.headers.get(header)
                if challenge is not None:
                    try:
                        value = digest_authorization(challenge, credentials, "INVITE", request_uri)
                    except ValueError as exc:
                        raise CallFailed(final.status, f"{final.reason} ({exc})") from exc
                    auth_headers = [(n, v) for n, v in auth_headers if n != answer]
                    auth_headers.append((answer, value))
                    continue
            if final.status >= 300 or final.status < 200:
                raise CallFailed(final.status, final.reason)
            return self._established(final, call_id, local, rtp, addr, cseq)

    async def _await_final(
        self,
        tx: _ClientTransaction,
        invite: SipRequest,
        addr: tuple[str, int],
        deadline: float,
        on_progress: Callable[[int, str], None] | None,
    ) -> tuple[SipResponse, bool]:
        loop = asyncio.get_running_loop()
        cancelled = False
        while True:
            timeout = deadline - loop.time()
            try:
                if cancelled or timeout > 0:
                    async with asyncio.timeout(
                        64 * self.t1 + 1 if cancelled else max(timeout, 0.001)
                    ):
                        response = await tx.responses.get()
                else:
                    raise TimeoutError
            except TimeoutError:
                if cancelled:  # the peer never ended the INVITE after our CANCEL
                    tx.cancel()
                    raise CallFailed(408, "No answer") from None
                cancelled = True
                tx.cancel()  # no more INVITE retransmissions
                self._send_cancel(invite, addr)
                continue
            if response.status < 200:
                if response.status in (180, 183) and on_progress is not None:
                    on_progress(response.status, response.reason)
                continue
            if cancelled and response.status == 487:
                raise CallFailed(408, "No answer")
            return response, cancelled

    def _send_cancel(self, invite: SipRequest, addr: tuple[str, int]) -> None:
        cancel = SipRequest(method="CANCEL", uri=invite.uri)
        cancel.headers.add("Via", invite.headers.get_all("Via")[0])  # same branch (9.1)
        cancel.headers.add("Max-Forwards", "70")
        cancel.headers.add("From", invite.headers.get("From") or "")
        cancel.headers.add("To", invite.headers.get("To") or "")
        cancel.headers.add("Call-ID", invite.call_id)
        cancel.headers.add("CSeq", f"{invite.cseq.number} CANCEL")
        self._start_client(cancel, addr)

    def _established(
        self,
        final: SipResponse,
        call_id: str,
        local: NameAddr,
        rtp: RtpStream,
        addr: tuple[str, int],
        cseq: int,
    ) -> Call:
        contact = final.headers.get("Contact")
        target = NameAddr.parse(contact).uri if contact else str(final.to.uri)
        try:
            target_uri = SipUri.parse(target)
            remote_addr = (target_uri.host, target_uri.port or 5060)
        except SipParseError:
            remote_addr = addr
        call = Call(
            self,
            call_id=call_id,
            local=local,
            remote=final.to,
            remote_target=target,
            remote_addr=remote_addr,
            outgoing=True,
            rtp=rtp,
            local_cseq=cseq,
        )
        self._calls[call.key] = call
        call._send_ack(cseq)
        answer = _parse_sdp(final)
        audio = answer.find("audio") if answer else None
        t38 = answer.find("t38") if answer else None
        if answer is not None and audio is not None:
            pt = choose_codec(audio)
            if pt is not None:
                rtp.connect(answer.endpoint(audio), pt)
        elif answer is not None and t38 is not None:  # an answer we did not offer
            log.warning("peer answered an audio offer with T.38 only")
        else:
            log.warning("200 OK without usable audio SDP; the call has no media")
        return call

    # --- server side ------------------------------------------------------------------

    def _new_server_transaction(
        self, request: SipRequest, addr: tuple[str, int]
    ) -> _ServerTransaction:
        tx = _ServerTransaction(self, request, addr)
        self._server_transactions[tx.key] = tx
        return tx

    def _on_request(self, request: SipRequest, addr: tuple[str, int]) -> None:
        method = request.method
        branch = request.top_via.branch
        if method == "ACK":
            self._on_ack(request)
            return
        existing = self._server_transactions.get((branch, method))
        if existing is not None:
            existing.retransmitted()
            return
        to_tag = request.to.tag
        if method == "CANCEL":
            self._on_cancel(request, addr)
        elif method == "INVITE" and not to_tag:
            self._on_invite(request, addr)
        elif method == "OPTIONS":
            tx = self._new_server_transaction(request, addr)
            response = self.response(request, 200, to_tag=new_tag())
            response.headers.add("Allow", ALLOW)
            tx.respond(response)
        else:
            call = self._calls.get((request.call_id, to_tag or ""))
            tx = None
            if call is None or (call.is_ended and method != "BYE"):
                tx = self._new_server_transaction(request, addr)
                tx.respond(self.response(request, 481))
            elif method == "BYE":
                call._on_bye(request, addr)
            elif method == "INVITE":
                tx = self._new_server_transaction(request, addr)
                self._spawn(call._on_reinvite(request, tx))
            else:
                tx = self._new_server_transaction(request, addr)
                tx.respond(self.response(request, 405))

    def _on_ack(self, request: SipRequest) -> None:
        tx = self._server_transactions.get((request.top_via.branch, "INVITE"))
        if tx is not None and tx.final_status is not None and tx.final_status >= 300:
            tx.acked.set()  # ACK for a failure response: same branch
            return
        call = self._calls.get((request.call_id, request.to.tag or ""))
        if call is not None:
            call._on_ack(request)

    def _on_cancel(self, request: SipRequest, addr: tuple[str, int]) -> None:
        tx = self._new_server_transaction(request, addr)
        incoming = self._incoming.get(request.top_via.branch)
        if incoming is None:
            tx.respond(self.response(request, 481))
            return
        tx.respond(self.response(request, 200))
        if not incoming.decided:
            incoming.decided = True
            incoming.cancelled.set()
            incoming.tx.respond(self.response(incoming.request, 487, to_tag=incoming.local_tag))

    def _on_invite(self, request: SipRequest, addr: tuple[str, int]) -> None:
        tx = self._new_server_transaction(request, addr)
        if self._handler is None:
            tx.respond(self.response(request, 480, to_tag=new_tag()))
            return
        tx.respond(self.response(request, 100))
        incoming = IncomingCall(self, request, addr, tx)
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
            asyncio.get_running_loop().call_later(64 * self.t1, self._incoming.pop, branch, None)


# --- The fax pump -----------------------------------------------------------------------

FaxEngine = FaxSession | T38Session
SessionFactory = Callable[[MediaKind], FaxEngine]
LINGER_BLOCKS = 25  # 0.5 s of call time after phase E before BYE, so the last frame arrives
# T.38 has no per-packet rhythm: the loop wakes every 3 blocks (60 ms of call time) and
# lets spandsp's terminal step 20 ms at a time within it (it sends at most one chunk a
# step). A third of the wake-ups, timer and packet handling of waking every 20 ms, for
# both ends of every call; T.30's timers are seconds, and UDPTL takes bursts.
T38_BLOCKS_PER_WAKE = 3


def _kind(session: FaxEngine) -> MediaKind:
    return "t38" if isinstance(session, T38Session) else "audio"


async def run_fax_over_call(
    call: Call,
    session: FaxEngine | SessionFactory,
    *,
    max_seconds: float = 1800.0,
    hangup: bool = True,
) -> FaxOutcome:
    """Pump a fax session over ``call``'s media until phase E, then hang up.

    ``session`` is a ready ``FaxSession`` (audio) or ``T38Session``, or a factory called
    with the call's media kind: with a factory, a re-INVITE that switches the media
    mid-call replaces the session (the T.30 exchange starts again on the new media, as
    a gateway would); the sessions it made are closed here. The remote hanging up ends
    T.30 after the buffered media was heard (a BYE overtaking the DCN is common).
    """
    factory: SessionFactory | None = None
    if isinstance(session, FaxSession | T38Session):
        current: FaxEngine = session
    else:
        factory = session
        current = factory(call.media_kind)
    made: list[FaxEngine] = [current] if factory is not None else []
    blocks = 0
    max_blocks = int(max_seconds * 50)
    clock = Clock(call.pace)
    rx: npt.NDArray[np.int16] = silence()
    linger = 0
    try:
        while True:
            if call.media_kind != _kind(current) and not current.done:
                if factory is None:
                    raise RuntimeError(f"the call switched to {call.media_kind}: pass a factory")
                log.info("%s: media is now %s, new session", call.call_id, call.media_kind)
                current.close()  # before the new one opens the same file
                current = factory(call.media_kind)
                made.append(current)
                rx = silence()
            step = 1 if isinstance(current, FaxSession) else T38_BLOCKS_PER_WAKE
            if current.done:
                linger += step
                if linger > LINGER_BLOCKS or call.is_ended:
                    break
            if blocks >= max_blocks:
                log.warning("%s: no phase E after %s s, hanging up", call.call_id, max_seconds)
                current.hangup()
                break
            blocks += step
            try:
                if isinstance(current, FaxSession):
                    tx = current.process(rx)
                    await call.send_audio(tx)
                    rx = await call.recv_audio()
                else:
                    if not call.pace:
                        # Lock-step needs one packet per slot each way; T.38 has no such
                        # rhythm, so two unpaced terminals would time each other out.
                        raise ValueError("T.38 needs a media clock: use a pace > 0")
                    await clock.wait_slot(step)
                    _t38_step(call, current, step)
                    if call.is_ended and call.udptl is not None and call.udptl.closed:
                        # Remote hung up: what had arrived is in; give T.30 its last chance.
                        _t38_step(call, current, 1)
                        raise CallEnded(call.end_reason)
            except CallEnded:
                if not current.done:
                    current.hangup()
                break
    finally:
        if hangup and not call.is_ended:
            await call.hangup()
    try:
        return current.result
    finally:
        for made_session in made:
            made_session.close()


def _t38_step(call: Call, session: T38Session, blocks: int) -> None:
    for seq, ifp in call.take_ifps():
        session.rx_packet(ifp, seq)
    for _ in range(blocks):
        session.tick(160)
    if call.udptl is not None and not call.is_ended:
        for packet in session.take_packets():
            call.udptl.send_ifp(packet.ifp, packet.seq, packet.copies)
