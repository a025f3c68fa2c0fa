"""The SIP user agent (RFC 3261 subset): calls out and in over one transport.

One ``UserAgent`` owns one ``Transport`` (UDP), one ``TransactionLayer`` and the table of
its dialogs. It can ``dial`` (INVITE, provisional responses, 200 → ACK; failures as
``CallFailed``; CANCEL when nobody answers in time; digest auth on 401/407) and
``listen`` for incoming INVITEs (the handler answers or rejects an ``IncomingCall``).
Every message in is parsed here and routed: responses to their transaction, requests to
a transaction (retransmissions), a dialog (ACK, BYE, re-INVITE) or a new call. No
proxies, no Route sets, no PRACK: this talks to one trunk or peer directly.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

from faxbox.fax.sip.dialog import ALLOW, Call, IncomingCall
from faxbox.fax.sip.digest import Credentials, digest_authorization
from faxbox.fax.sip.message import (
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    Via,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)
from faxbox.fax.sip.rtp import RtpStream
from faxbox.fax.sip.sdp import PCMA, PCMU, SessionDescription, audio_media, choose_codec, sdp_of
from faxbox.fax.sip.transaction import T1, T2, ClientTransaction, TransactionLayer
from faxbox.fax.sip.transport import Address, Transport, UdpTransport

log = logging.getLogger("faxbox.fax.sip")


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


Handler = Callable[[IncomingCall], Awaitable[None]]


class UserAgent:
    """SIP over one transport: ``dial`` out, ``listen`` for calls in.

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
        self.credentials = credentials
        self.accept_t38 = accept_t38
        self.jitter_prefill = jitter_prefill
        self.transport: Transport | None = None
        self.transactions = TransactionLayer(
            self.send, t1=t1, t2=t2, product=user_agent, on_stray_2xx=self._on_stray_2xx
        )
        self._handler: Handler | None = None
        self._incoming: dict[str, IncomingCall] = {}  # by INVITE branch
        self._calls: dict[tuple[str, str], Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent: list[bytes] = []  # the last messages sent and received, for tests/debugging
        self.received: list[bytes] = []

    @classmethod
    async def start(cls, host: str = "127.0.0.1", port: int = 0, **options: Any) -> UserAgent:
        """A user agent listening on host:port (0: a free port); options as for __init__."""
        ua = cls(host, **options)
        ua.transport = await UdpTransport.open(host, port, ua.receive)
        ua.port = ua.transport.port
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
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    @property
    def t1(self) -> float:
        return self.transactions.t1

    @property
    def is_open(self) -> bool:
        """Whether the transport is up (a readiness check)."""
        return self.transport is not None and self.transport.is_open

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    def listen(self, handler: Handler) -> None:
        """Route incoming INVITEs to ``handler`` (one task per call)."""
        self._handler = handler

    # --- transport --------------------------------------------------------------------

    def send(self, data: bytes, addr: Address) -> None:
        if self.transport is None:
            return
        self._keep(self.sent, data)
        self.transport.send(data, addr)

    @staticmethod
    def _keep(log_list: list[bytes], data: bytes) -> None:
        log_list.append(data)
        if len(log_list) > 200:
            del log_list[:100]

    def via(self, branch: str) -> str:
        name = self.transport.name if self.transport is not None else "UDP"
        return str(Via(self.host, self.port, name, {"branch": branch, "rport": None}))

    def contact(self, user: str | None = None) -> str:
        return f"<sip:{user or self.user}@{self.host}:{self.port}>"

    def receive(self, data: bytes, addr: Address) -> None:
        """One message from the transport (``addr``: where it came from)."""
        if not data.strip():
            return  # keep-alive
        try:
            message = parse_message(data)
            self._keep(self.received, data)
            if isinstance(message, SipResponse):
                self.transactions.on_response(message)
            else:
                self._on_request(message, addr)
        except (SipParseError, ValueError) as exc:
            log.info("dropped a bad SIP message from %s: %s", addr, exc)
        except Exception:  # never let one message take the transport down
            log.exception("failed to handle a SIP message from %s", addr)

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

    # --- client side ------------------------------------------------------------------

    def _on_stray_2xx(self, response: SipResponse) -> None:
        call = self._calls.get((response.call_id, response.from_.tag or ""))
        if call is not None:
            call.on_2xx_retransmission(response)

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
        addr: Address,
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
            tx = self.transactions.client(invite, addr)
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
        tx: ClientTransaction,
        invite: SipRequest,
        addr: Address,
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
                        self.transactions.timeout + 1 if cancelled else max(timeout, 0.001)
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

    def _send_cancel(self, invite: SipRequest, addr: Address) -> None:
        cancel = SipRequest(method="CANCEL", uri=invite.uri)
        cancel.headers.add("Via", invite.headers.get_all("Via")[0])  # same branch (9.1)
        cancel.headers.add("Max-Forwards", "70")
        cancel.headers.add("From", invite.headers.get("From") or "")
        cancel.headers.add("To", invite.headers.get("To") or "")
        cancel.headers.add("Call-ID", invite.call_id)
        cancel.headers.add("CSeq", f"{invite.cseq.number} CANCEL")
        self.transactions.client(cancel, addr)

    def _established(
        self,
        final: SipResponse,
        call_id: str,
        local: NameAddr,
        rtp: RtpStream,
        addr: Address,
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
        self.remember(call)
        call.send_ack(cseq)
        answer = sdp_of(final)
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

    def _on_request(self, request: SipRequest, addr: Address) -> None:
        method = request.method
        if method == "ACK":
            self._on_ack(request)
            return
        if self.transactions.absorb_retransmission(request):
            return
        server = self.transactions.server
        to_tag = request.to.tag
        if method == "CANCEL":
            self._on_cancel(request, addr)
        elif method == "INVITE" and not to_tag:
            self._on_invite(request, addr)
        elif method == "OPTIONS":
            tx = server(request, addr)
            response = tx.response(200, to_tag=new_tag())
            response.headers.add("Allow", ALLOW)
            tx.respond(response)
        else:
            call = self._calls.get((request.call_id, to_tag or ""))
            tx = None
            if call is None or (call.is_ended and method != "BYE"):
                tx = server(request, addr)
                tx.respond(tx.response(481))
            elif method == "BYE":
                call.on_bye(request, addr)
            elif method == "INVITE":
                tx = server(request, addr)
                self._spawn(call.on_reinvite(request, tx))
            else:
                tx = server(request, addr)
                tx.respond(tx.response(405))

    def _on_ack(self, request: SipRequest) -> None:
        if self.transactions.absorb_failure_ack(request):
            return
        call = self._calls.get((request.call_id, request.to.tag or ""))
        if call is not None:
            call.on_ack(request)

    def _on_cancel(self, request: SipRequest, addr: Address) -> None:
        tx = self.transactions.server(request, addr)
        incoming = self._incoming.get(request.top_via.branch)
        if incoming is None:
            tx.respond(tx.response(481))
            return
        tx.respond(tx.response(200))
        if not incoming.decided:
            incoming.decided = True
            incoming.cancelled.set()
            incoming.tx.respond(incoming.tx.response(487, to_tag=incoming.local_tag))

    def _on_invite(self, request: SipRequest, addr: Address) -> None:
        tx = self.transactions.server(request, addr)
        if self._handler is None:
            tx.respond(tx.response(480, to_tag=new_tag()))
            return
        tx.respond(tx.response(100))
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
            asyncio.get_running_loop().call_later(
                self.transactions.timeout, self._incoming.pop, branch, None
            )
