"""Registration with a carrier's registrar (RFC 3261 §10): REGISTER, refresh, back-off.

A ``Registration`` binds our contact (``sip:<user>@<our address>:<port>`` over the
transport the registrar is reached on) to the address of record ``sip:<user>@<domain>``
so the carrier sends calls for it to us. It answers digest challenges (401/407) with
its credentials and a 423 with the registrar's Min-Expires, then refreshes before the
granted expiry runs out (halfway for short grants, a minute early for long ones). A
refused or unanswered REGISTER is retried with exponential back-off and jitter, from
``retry_min_s`` up to ``retry_max_s``, for as long as the registration runs; ``stop``
removes the binding (``Expires: 0``). ``status`` says at every moment where it stands;
``on_change`` hears every change (the services publish it to their metrics and the
portal's dashboard).

Over TCP or TLS the REGISTER opens a connection the registrar keeps using to send us
calls (a carrier's SBC does this behind NAT); the transport's keep-alive pings hold it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

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
from faxbox.fax.sip.resolve import ResolveError
from faxbox.fax.sip.routing import RouteSet
from faxbox.fax.sip.transaction import ClientTransaction
from faxbox.fax.sip.transport import Hop

log = logging.getLogger("faxbox.fax.sip.registration")


class RegistrationState(StrEnum):
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"  # the last REGISTER was refused or unanswered: retrying
    UNREGISTERED = "unregistered"  # stopped


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    registrar: str
    aor: str
    state: RegistrationState = RegistrationState.REGISTERING
    contact: str = ""
    expires_at: datetime | None = None
    last_status: int | None = None
    last_reason: str = ""
    failures: int = 0  # consecutive
    updated_at: datetime | None = None

    @property
    def registered(self) -> bool:
        return self.state is RegistrationState.REGISTERED


class RegistrarHost(Protocol):
    @property
    def media_address(self) -> str: ...

    def contact(self, user: str | None = None, transport: str = "UDP") -> str: ...

    def request(self, request: SipRequest, hop: Hop) -> ClientTransaction: ...

    async def hops(self, uri: str) -> list[Hop]: ...


def granted_expiry(response: SipResponse, contact_uri: str, asked: int) -> int:
    """The expiry the registrar granted our contact: its Contact's ``expires``, else the
    Expires header, else what we asked for."""
    ours = _comparable(contact_uri)
    for value in response.headers.get_all("Contact"):
        try:
            contact = NameAddr.parse(value)
        except SipParseError:
            continue
        expires = contact.params.get("expires")
        if _comparable(contact.uri) == ours and expires and expires.isdigit():
            return int(expires)
    header = (response.headers.get("Expires") or "").strip()
    return int(header) if header.isdigit() else asked


def _comparable(uri: str) -> tuple[str, str, int | None, str]:
    try:
        parsed = SipUri.parse(uri)
    except SipParseError:
        return (uri, "", None, "")
    transport = (parsed.params.get("transport") or "udp").lower()
    return (parsed.user or "", parsed.host, parsed.port, transport)


def refresh_after(granted: int) -> float:
    """When to register again: halfway through a short grant, a minute early otherwise."""
    return granted / 2 if granted < 240 else granted - 60


class Registration:
    """Keeps ``user`` registered at ``registrar`` (``sip:domain``, a URI RFC 3263 resolves).

    ``domain`` is the address of record's host (the registrar's host when None);
    ``proxy`` an outbound proxy the REGISTERs go through.
    """

    def __init__(
        self,
        ua: RegistrarHost,
        registrar: str,
        user: str,
        *,
        credentials: Credentials | None = None,
        domain: str | None = None,
        expires_s: int = 600,
        proxy: str | None = None,
        retry_min_s: float = 5.0,
        retry_max_s: float = 300.0,
        on_change: Callable[[RegistrationStatus], None] | None = None,
    ) -> None:
        self.ua = ua
        self.registrar = SipUri.parse(registrar)
        self.user = user
        self.credentials = credentials
        self.domain = domain or self.registrar.host
        self.expires_s = expires_s
        self.proxy = proxy
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.on_change = on_change
        self.aor = f"sip:{user}@{self.domain}"
        self.call_id = new_call_id(ua.media_address)
        self.tag = new_tag()
        self._cseq = secrets.randbelow(1000)
        self._task: asyncio.Task[None] | None = None
        self._hop: Hop | None = None
        self._contact = ""
        self._registered = asyncio.Event()
        self.status = RegistrationStatus(registrar=str(self.registrar), aor=self.aor)

    def _set(self, **changes: object) -> None:
        self.status = replace(self.status, updated_at=datetime.now(UTC), **changes)  # type: ignore[arg-type]
        if self.on_change is not None:
            try:
                self.on_change(self.status)
            except Exception:
                log.exception("registration status listener failed")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def wait_registered(self, within_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await self._registered.wait()
        return self._registered.is_set()

    async def _run(self) -> None:
        failures = 0
        while True:
            granted = await self._register_once(self.expires_s)
            if granted:
                failures = 0
                await asyncio.sleep(refresh_after(granted))
                continue
            failures += 1
            delay = min(self.retry_max_s, self.retry_min_s * 2 ** (failures - 1))
            delay *= random.uniform(0.8, 1.0)
            log.warning(
                "registration of %s at %s failed (%s %s); again in %.0f s",
                self.aor,
                self.registrar,
                self.status.last_status,
                self.status.last_reason,
                delay,
            )
            await asyncio.sleep(delay)

    async def _register_once(self, expires: int) -> int:
        """One REGISTER (with its challenge and 423 retries): the granted expiry, 0 if
        refused. With ``expires`` 0, removes the binding."""
        try:
            route_set = RouteSet.preloaded(self.proxy)
            hops = await self.ua.hops(route_set.next_hop_uri(str(self.registrar)))
            hop = hops[0]
        except (ResolveError, SipParseError, IndexError) as exc:
            self._failed(503, f"cannot resolve the registrar: {exc}")
            return 0
        self._hop = hop
        self._contact = self.ua.contact(self.user, hop.transport)
        contact_uri = NameAddr.parse(self._contact).uri
        auth: list[tuple[str, str]] = []
        challenges = 0
        for _ in range(4):
            self._cseq += 1
            request = SipRequest(method="REGISTER", uri=str(self.registrar))
            h = request.headers
            h.add("Max-Forwards", "70")
            for route in route_set.routes:
                h.add("Route", route)
            h.add("From", f"<{self.aor}>;tag={self.tag}")
            h.add("To", f"<{self.aor}>")
            h.add("Call-ID", self.call_id)
            h.add("CSeq", f"{self._cseq} REGISTER")
            h.add("Contact", self._contact)
            h.add("Expires", str(expires))
            for name, value in auth:
                h.add(name, value)
            response = await self.ua.request(request, hop).final_or_timeout()
            status = response.status
            if status in (401, 407) and self.credentials is not None and challenges < 2:
                challenges += 1
                try:
                    answer = answer_challenge(
                        response, self.credentials, "REGISTER", str(self.registrar)
                    )
                except ValueError as exc:
                    self._failed(status, f"{response.reason} ({exc})")
                    return 0
                if answer is None:
                    break
                auth = [answer]
                continue
            if status == 423:
                minimum = (response.headers.get("Min-Expires") or "").strip()
                if minimum.isdigit() and int(minimum) > expires:
                    expires = int(minimum)
                    continue
            if 200 <= status < 300:
                if expires == 0:
                    return 0
                granted = granted_expiry(response, contact_uri, expires)
                if granted <= 0:
                    self._failed(status, "the registrar kept no binding")
                    return 0
                self._set(
                    state=RegistrationState.REGISTERED,
                    contact=self._contact,
                    expires_at=datetime.now(UTC) + timedelta(seconds=granted),
                    last_status=status,
                    last_reason=response.reason,
                    failures=0,
                )
                self._registered.set()
                log.info("registered %s at %s for %d s", self.aor, self.registrar, granted)
                return granted
            self._failed(status, response.reason)
            return 0
        self._failed(response.status, response.reason)
        return 0

    def _failed(self, status: int, reason: str) -> None:
        self._registered.clear()
        self._set(
            state=RegistrationState.FAILED,
            last_status=status,
            last_reason=reason,
            failures=self.status.failures + 1,
            expires_at=None,
        )

    async def stop(self) -> None:
        """Stop refreshing and remove the binding (bounded: a registrar that is gone
        does not hold up a shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.status.registered:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._register_once(0)
        self._registered.clear()
        self._set(state=RegistrationState.UNREGISTERED, expires_at=None)
