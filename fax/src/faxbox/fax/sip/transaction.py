"""SIP transactions (RFC 3261 §17): retransmission and matching, below dialogs.

Reliability over UDP is the RFC 3261 timer scheme kept simple: requests are resent at
T1, 2·T1, ... (non-INVITE capped at T2) until a response arrives or 64·T1 passes (then
the transaction reports a 408 of its own); final responses to INVITE are resent the
same way until the ACK arrives; a retransmitted request is answered with the last
response sent for it. Over TCP and TLS nothing is resent (the transport is reliable),
and a connection that cannot be made fails the transactions waiting on it at once with
a 503 of our own (§8.1.3.1). Transactions are kept 64·T1 after they end to absorb late
retransmissions, keyed by the top Via's branch and the method.

``TransactionLayer`` owns both tables and the timers; it sends through the function it
is given (the user agent's transport) and knows nothing about dialogs: a 2xx to an
INVITE that no transaction claims any more goes to ``on_stray_2xx`` (the dialog ACKs it,
§13.2.2.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from faxbox.fax.sip.message import REASONS, SipRequest, SipResponse
from faxbox.fax.sip.transport import Hop

log = logging.getLogger("faxbox.fax.sip.transaction")

T1 = 0.5  # RFC 3261 round-trip estimate
T2 = 4.0

Key = tuple[str, str]  # (top Via branch, method)
Send = Callable[[bytes, Hop], None]


class TransactionLayer:
    """The client and server transactions of one user agent."""

    def __init__(
        self,
        send: Send,
        *,
        t1: float = T1,
        t2: float = T2,
        product: str = "Faxbox",
        on_stray_2xx: Callable[[SipResponse], None] = lambda _response: None,
    ) -> None:
        self.send = send
        self.t1 = t1
        self.t2 = t2
        self.product = product  # our User-Agent / Server header
        self.on_stray_2xx = on_stray_2xx
        self._clients: dict[Key, ClientTransaction] = {}
        self._servers: dict[Key, ServerTransaction] = {}

    @property
    def timeout(self) -> float:
        """64·T1: how long a transaction may take, and how long it is remembered after."""
        return 64 * self.t1

    def client(self, request: SipRequest, hop: Hop) -> ClientTransaction:
        """Send ``request`` to ``hop`` and keep resending it (over UDP) until answered."""
        request.headers.set("User-Agent", self.product)
        tx = ClientTransaction(self, request, hop)
        self._clients[tx.key] = tx
        return tx

    def server(self, request: SipRequest, hop: Hop) -> ServerTransaction:
        """A new server transaction for ``request``: build with ``response``, send with
        ``respond``."""
        tx = ServerTransaction(self, request, hop)
        self._servers[tx.key] = tx
        return tx

    def transport_failed(self, hop: Hop, reason: str) -> None:
        """``hop`` cannot be reached: its unanswered transactions end with a 503 of ours."""
        for tx in list(self._clients.values()):
            if tx.hop == hop and not tx.got_response:
                tx.fail(503, f"Service Unavailable ({reason})")

    def on_response(self, response: SipResponse) -> None:
        tx = self._clients.get((response.top_via.branch, response.cseq.method))
        if tx is not None:
            tx.on_response(response)
        elif response.cseq.method == "INVITE" and 200 <= response.status < 300:
            self.on_stray_2xx(response)

    def absorb_retransmission(self, request: SipRequest) -> bool:
        """True when ``request`` repeats one we already have (its last response is resent)."""
        tx = self._servers.get((request.top_via.branch, request.method))
        if tx is None:
            return False
        tx.retransmitted()
        return True

    def absorb_failure_ack(self, ack: SipRequest) -> bool:
        """True when ``ack`` acknowledges a final failure response of ours (same branch,
        §17.2.1): it ends that INVITE transaction, not a dialog."""
        tx = self._servers.get((ack.top_via.branch, "INVITE"))
        if tx is None or tx.final_status is None or tx.final_status < 300:
            return False
        tx.acked.set()
        return True

    def forget_later(self, key: Key, client: bool) -> None:
        asyncio.get_running_loop().call_later(self.timeout, self._forget, key, client)

    def _forget(self, key: Key, client: bool) -> None:
        if client:
            self._clients.pop(key, None)
        else:
            self._servers.pop(key, None)

    def close(self) -> None:
        for client in self._clients.values():
            client.cancel()
        for server in self._servers.values():
            server.cancel()


class ClientTransaction:
    """One request we sent: its retransmissions and the responses it gets."""

    def __init__(self, layer: TransactionLayer, request: SipRequest, hop: Hop) -> None:
        self.layer = layer
        self.request = request
        self.hop = hop
        self.invite = request.method == "INVITE"
        self.key = (request.top_via.branch, request.method)
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()
        self.got_response = False
        self.remote_answered = False  # a response came from the network (not one of ours)
        self.final: SipResponse | None = None
        self.ack: bytes | None = None
        self._task = asyncio.create_task(self._retransmit())

    async def _retransmit(self) -> None:
        await self._retransmit_loop()
        if self.final is None:  # timed out; stopping retransmissions (cancel()) keeps it
            self.layer.forget_later(self.key, client=True)

    async def _retransmit_loop(self) -> None:
        layer = self.layer
        data = self.request.serialize()
        interval = layer.t1
        deadline = asyncio.get_running_loop().time() + layer.timeout
        layer.send(data, self.hop)
        while True:
            await asyncio.sleep(layer.timeout if self.hop.reliable else interval)
            if self.final is not None:
                return
            if asyncio.get_running_loop().time() >= deadline:
                if not self.got_response:
                    self.responses.put_nowait(timeout_response(self.request))
                return
            if self.hop.reliable:
                continue
            if self.invite:
                if self.got_response:
                    continue  # provisional received: wait for the final (timer C is ours)
                interval *= 2  # timer A
            elif self.got_response:
                interval = layer.t2  # timer E after a provisional
            else:
                interval = min(interval * 2, layer.t2)
            layer.send(data, self.hop)

    def on_response(self, response: SipResponse) -> None:
        self.got_response = True
        self.remote_answered = True
        if response.status >= 200:
            if self.final is not None:  # a retransmitted final response
                if self.ack is not None:
                    self.layer.send(self.ack, self.hop)
                elif self.invite:  # 2xx: the dialog ACKs it (13.2.2.4)
                    self.layer.on_stray_2xx(response)
                return
            self.final = response
            if self.invite and response.status >= 300:
                # ACK for a non-2xx final response belongs to the transaction (17.1.1.3).
                self.ack = _ack_for_failure(self.request, response).serialize()
                self.layer.send(self.ack, self.hop)
            # Keep the entry for 32 s (timer D/K) to absorb retransmissions.
            self.layer.forget_later(self.key, client=True)
        self.responses.put_nowait(response)

    async def final_response(self) -> SipResponse:
        """Wait for the final response (provisional ones are skipped)."""
        while True:
            response = await self.responses.get()
            if response.status >= 200:
                return response

    async def final_or_timeout(self) -> SipResponse:
        """The final response, or a 408 of our own after 64·T1 and a second."""
        try:
            async with asyncio.timeout(self.layer.timeout + 1):
                return await self.final_response()
        except TimeoutError:
            return timeout_response(self.request)

    def cancel(self) -> None:
        """Stop retransmitting (the entry stays to match late responses)."""
        self._task.cancel()

    def fail(self, status: int, reason: str) -> None:
        """End unanswered with a final response of our own (a transport error)."""
        if self.final is not None:
            return
        self._task.cancel()
        response = timeout_response(self.request, status, reason)
        self.final = response
        self.got_response = True
        self.layer.forget_later(self.key, client=True)
        self.responses.put_nowait(response)


def timeout_response(
    request: SipRequest, status: int = 408, reason: str = "Request Timeout"
) -> SipResponse:
    response = SipResponse(status=status, reason=reason)
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
    for route in invite.headers.get_all("Route"):  # §17.1.1.3: the INVITE's Route set
        ack.headers.add("Route", route)
    return ack


class ServerTransaction:
    """Remembers the last response to a request; resends final INVITE responses until ACK."""

    def __init__(self, layer: TransactionLayer, request: SipRequest, hop: Hop) -> None:
        self.layer = layer
        self.request = request
        self.hop = hop
        self.key = (request.top_via.branch, request.method)
        self.last: bytes | None = None
        self.final_status: int | None = None
        self.acked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def response(
        self,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        body: bytes = b"",
    ) -> SipResponse:
        """A response to our request (§8.2.6): its Vias, From, Call-ID and CSeq, its To
        with ``to_tag`` added (not on 100), ``body`` as SDP."""
        request = self.request
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
        if 100 < status < 300:  # §12.1.1: a dialog's route set comes back to the caller
            for record_route in request.headers.get_all("Record-Route"):
                response.headers.add("Record-Route", record_route)
        response.headers.add("Server", self.layer.product)
        if body:
            response.headers.add("Content-Type", "application/sdp")
        response.body = body
        return response

    def respond(self, response: SipResponse) -> None:
        self.last = response.serialize()
        self.layer.send(self.last, self.hop)
        if response.status >= 200 and self.final_status is None:
            self.final_status = response.status
            if self.request.method == "INVITE":
                self._task = asyncio.create_task(self._retransmit_until_ack())
            else:
                self.layer.forget_later(self.key, client=False)

    async def _retransmit_until_ack(self) -> None:
        layer = self.layer
        interval = layer.t1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + layer.timeout
        try:
            while loop.time() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.acked.wait(), interval)
                if self.acked.is_set():
                    return
                if self.last is not None and not self.hop.reliable:
                    layer.send(self.last, self.hop)
                interval = min(interval * 2, layer.t2)
            log.info("no ACK for %s %s", self.final_status, self.request.call_id)
        finally:
            layer.forget_later(self.key, client=False)

    def retransmitted(self) -> None:
        if self.last is not None:
            self.layer.send(self.last, self.hop)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
