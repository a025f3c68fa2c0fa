"""What a request handler needs: the portal's dependencies and who is asking.

``PortalDeps`` holds the explicit dependencies ``create_app`` was built with (nothing
connects at import time; :mod:`faxbox.portal.service` wires the real ones). The
principal comes from an API token (``Authorization: Bearer``) or the signed session
cookie; state-changing requests of a cookie session also pass the CSRF check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from faxbox.portal.access import Forbidden
from faxbox.portal.clientaddr import TrustedProxies
from faxbox.portal.outbound import Sending, SendLimits
from faxbox.portal.ports import HealthProbe, QueueSource, Redriver
from faxbox.portal.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    Principal,
    SessionStore,
    TokenScope,
    TokenStore,
    password_fingerprint,
    tokens_match,
)
from faxbox.portal.submissions import SubmissionStore
from faxbox.portal.throttle import SignInThrottle
from faxbox.portal.webhook_admin import Hooks
from faxbox.shared.outbox import Outbox
from faxbox.shared.routing import Topology
from faxbox.shared.store import NotFound, Store
from faxbox.shared.store.cancellations import Cancellations
from faxbox.shared.store.registrations import COLLECTION as REGISTRATIONS
from faxbox.shared.store.registrations import SipRegistrations
from faxbox.shared.store.signing_keys import SigningKeys
from faxbox.shared.store.store import CallerIdScope
from faxbox.shared.store.webhooks import WebhookStore
from faxbox.shared.urlguard import IPNetwork, Resolver, system_resolver


@dataclass(frozen=True)
class Links:
    rabbitmq_ui: str = ""
    grafana: str = ""


@dataclass(frozen=True)
class PortalDeps:
    store: Store
    tokens: TokenStore
    sessions: SessionStore
    queues: QueueSource
    probe: HealthProbe
    redriver: Redriver
    topology: Topology
    cookie_secure: bool = False
    proxies: TrustedProxies = field(default_factory=TrustedProxies)
    caller_id_scope: CallerIdScope = "faxbox"
    health_urls: dict[str, str] = field(default_factory=dict)
    links: Links = field(default_factory=Links)
    # None: the default limits on ``store.db`` (create_app fills it in).
    signin: SignInThrottle | None = None
    # Sending, cancelling and replaying are recorded and published here (the portal's
    # outbox, swept by the service); None: those answer 503.
    outbox: Outbox | None = None
    # None: FAXBOX_SECRET_KEY is not set, so no signing key can be shown or made.
    signing_keys: SigningKeys | None = None
    webhook_networks: Sequence[IPNetwork] = ()
    webhook_resolver: Resolver = system_resolver
    send_limits: SendLimits = field(default_factory=SendLimits)

    @property
    def sending(self) -> Sending:
        return Sending(
            store=self.store,
            submissions=SubmissionStore(self.store.db),
            cancellations=Cancellations(self.store.db),
            outbox=self.outbox,
            limits=self.send_limits,
        )

    @property
    def hooks(self) -> Hooks:
        return Hooks(
            store=self.store,
            webhooks=WebhookStore(self.store.db),
            keys=self.signing_keys,
            outbox=self.outbox,
            allowed=self.webhook_networks,
            resolver=self.webhook_resolver,
            publish_wait_s=self.send_limits.publish_wait_s,
        )


class NotSignedIn(Exception):
    pass


class CsrfFailed(Exception):
    pass


def deps_of(request: Request) -> PortalDeps:
    deps: PortalDeps = request.app.state.deps
    return deps


async def optional_principal(request: Request) -> Principal | None:
    deps = deps_of(request)
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer":
        token = await deps.tokens.authenticate(credentials.strip())
        if token is None:
            raise NotSignedIn()
        try:
            user = await deps.store.get_user(token.user_id)
        except NotFound:
            raise NotSignedIn() from None
        if not await deps.tokens.still_valid_for(token, user):
            raise NotSignedIn()  # the password changed: the token went with it
        return Principal(user=user, csrf=None, token_id=token.id, scope=token.scope)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    session = await deps.sessions.find(cookie)
    if session is None:
        return None
    try:
        user = await deps.store.get_user(session.user_id)
    except NotFound:
        await deps.sessions.end(session.id)
        return None
    if not tokens_match(password_fingerprint(user), session.fingerprint):
        await deps.sessions.end(session.id)  # the password changed since it began
        return None
    return Principal(user=user, csrf=session.csrf, session_id=session.id)


async def current_principal(
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    if principal is None:
        raise NotSignedIn()
    return principal


async def submitted_csrf(request: Request) -> str | None:
    given = request.headers.get(CSRF_HEADER)
    if given:
        return given
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def require_scope(principal: Principal, scope: TokenScope) -> None:
    """An API token must carry ``scope`` or a wider one; a signed-in browser may do what
    its role may."""
    if principal.token_id is not None and not principal.scope.covers(scope):
        raise Forbidden(
            f"this API token has scope {principal.scope.value}; this needs scope {scope.value}"
            + (" or admin" if scope is TokenScope.SEND else "")
        )


async def _csrf_checked(request: Request, principal: Principal) -> Principal:
    if principal.csrf is not None and not tokens_match(
        principal.csrf, await submitted_csrf(request)
    ):
        raise CsrfFailed()
    return principal


async def checked_principal(
    request: Request, principal: Annotated[Principal, Depends(current_principal)]
) -> Principal:
    """The principal of a state-changing request, after the CSRF and scope checks."""
    require_scope(principal, TokenScope.ADMIN)
    return await _csrf_checked(request, principal)


async def sending_principal(
    request: Request, principal: Annotated[Principal, Depends(current_principal)]
) -> Principal:
    """Sending, cancelling or resending a fax: scope send is enough for an API token."""
    require_scope(principal, TokenScope.SEND)
    return await _csrf_checked(request, principal)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
CheckedPrincipal = Annotated[Principal, Depends(checked_principal)]
SendingPrincipal = Annotated[Principal, Depends(sending_principal)]
Deps = Annotated[PortalDeps, Depends(deps_of)]


def sip_registrations(deps: PortalDeps) -> SipRegistrations:
    return SipRegistrations(deps.store.db[REGISTRATIONS])


def require_dashboard(principal: Principal) -> None:
    # The queues are the whole platform's: every tenant's mail passes through them.
    if not principal.is_platform_admin:
        raise Forbidden("the queue dashboard is for platform administrators")
