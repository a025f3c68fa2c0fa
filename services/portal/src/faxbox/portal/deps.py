"""What a request handler needs: the portal's dependencies and who is asking.

``PortalDeps`` holds the explicit dependencies ``create_app`` was built with (nothing
connects at import time; :mod:`faxbox.portal.service` wires the real ones). The
principal comes from an API token (``Authorization: Bearer``) or the signed session
cookie; state-changing requests of a cookie session also pass the CSRF check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from faxbox.portal.access import Forbidden
from faxbox.portal.dashboard import HealthProbe, QueueSource, Redriver
from faxbox.portal.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    Principal,
    SessionSigner,
    TokenStore,
    password_fingerprint,
    tokens_match,
)
from faxbox.portal.throttle import SignInThrottle
from faxbox.shared.routing import Topology
from faxbox.shared.store import NotFound, Store


@dataclass(frozen=True)
class Links:
    rabbitmq_ui: str = ""
    grafana: str = ""


@dataclass(frozen=True)
class PortalDeps:
    store: Store
    tokens: TokenStore
    signer: SessionSigner
    queues: QueueSource
    probe: HealthProbe
    redriver: Redriver
    topology: Topology
    cookie_secure: bool = False
    dashboard_roles: tuple[str, ...] = ("reseller_admin",)
    health_urls: dict[str, str] = field(default_factory=dict)
    links: Links = field(default_factory=Links)
    # None: the default limits on ``store.db`` (create_app fills it in).
    signin: SignInThrottle | None = None


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
        return Principal(user=user, csrf=None, token_id=token.id)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    session = deps.signer.loads(cookie)
    if session is None:
        return None
    try:
        user = await deps.store.get_user(session.user_id)
    except NotFound:
        return None
    if not tokens_match(password_fingerprint(user), session.fingerprint):
        return None  # the password changed since this session began
    return Principal(user=user, csrf=session.csrf)


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


async def checked_principal(
    request: Request, principal: Annotated[Principal, Depends(current_principal)]
) -> Principal:
    """The principal of a state-changing request, after the CSRF check."""
    if principal.csrf is not None and not tokens_match(
        principal.csrf, await submitted_csrf(request)
    ):
        raise CsrfFailed()
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
CheckedPrincipal = Annotated[Principal, Depends(checked_principal)]
Deps = Annotated[PortalDeps, Depends(deps_of)]


def require_dashboard(principal: Principal, deps: PortalDeps) -> None:
    if principal.role.value not in deps.dashboard_roles:
        raise Forbidden("the queue dashboard is for platform administrators")
