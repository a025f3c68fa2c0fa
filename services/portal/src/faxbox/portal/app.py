"""The FastAPI application: dependencies, authentication, error mapping.

``create_app(deps)`` builds the app from explicit dependencies (nothing connects at
import time); :mod:`faxbox.portal.service` wires the real ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from faxbox.portal.access import Forbidden
from faxbox.portal.admin import InvalidInput
from faxbox.portal.dashboard import HealthProbe, QueueSource, Redriver
from faxbox.portal.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    PRELOGIN_COOKIE,
    SESSION_COOKIE,
    Principal,
    SessionData,
    SessionSigner,
    TokenStore,
    new_csrf_token,
    password_fingerprint,
    tokens_match,
)
from faxbox.portal.throttle import SignInThrottle, TooManyFailures
from faxbox.shared import passwords
from faxbox.shared.routing import Topology
from faxbox.shared.store import InvalidCursor, NotFound, NumberAlreadyAssigned, Store, User

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


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


async def authenticate_password(deps: PortalDeps, email: str, password: str) -> User | None:
    user = await deps.store.find_user_by_email(email)
    if not passwords.verify_password(user.password_hash if user else None, password):
        return None
    if user is None or user.password_hash is None:
        return None
    if passwords.needs_rehash(user.password_hash):
        user = await deps.store.set_password_hash(user.id, passwords.hash_password(password))
    return user


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def throttled_sign_in(
    request: Request, deps: PortalDeps, email: str, password: str
) -> User | None:
    """authenticate_password behind the sign-in limits (TooManyFailures when over)."""
    throttle = deps.signin or SignInThrottle(deps.store.db)
    attempt = await throttle.begin(email, client_address(request))
    try:
        user = await authenticate_password(deps, email, password)
    except BaseException:
        await throttle.abandon(attempt)
        raise
    if user is None:
        await throttle.failed(attempt)
    else:
        await throttle.succeeded(attempt)
    return user


def start_session(response: Response, deps: PortalDeps, user: User) -> str:
    """Set the session cookie (with a fresh CSRF token, which is returned)."""
    csrf = new_csrf_token()
    value = deps.signer.dumps(SessionData(user.id, csrf, password_fingerprint(user)))
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=deps.signer.max_age_s,
        httponly=True,
        samesite="lax",
        secure=deps.cookie_secure,
        path="/",
    )
    response.delete_cookie(PRELOGIN_COOKIE, path="/")
    return csrf


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def prelogin_token(request: Request, response: Response, deps: PortalDeps) -> str:
    """The double-submit token of the sign-in form (cookie set when new)."""
    token = request.cookies.get(PRELOGIN_COOKIE)
    if not token or len(token) < 32:
        token = new_csrf_token()
        response.set_cookie(
            PRELOGIN_COOKIE,
            token,
            httponly=True,
            samesite="lax",
            secure=deps.cookie_secure,
            path="/",
        )
    return token


def prelogin_ok(request: Request, given: str | None) -> bool:
    return tokens_match(request.cookies.get(PRELOGIN_COOKIE), given)


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error(request: Request, status: int, message: str, **headers: str) -> Response:
    if is_api(request):
        return JSONResponse({"detail": message}, status_code=status, headers=headers or None)
    return TEMPLATES.TemplateResponse(
        request,
        "error.html",
        {"status": status, "message": message, "principal": None},
        status_code=status,
        headers=headers or None,
    )


def install_error_handlers(app: FastAPI) -> None:
    async def not_signed_in(request: Request, exc: Exception) -> Response:
        if is_api(request):
            return JSONResponse(
                {"detail": "not signed in"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return RedirectResponse("/login", status_code=303)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(request, 404, "not found")

    async def forbidden(request: Request, exc: Exception) -> Response:
        return _error(request, 403, str(exc) or "forbidden")

    async def csrf_failed(request: Request, exc: Exception) -> Response:
        return _error(request, 403, "missing or wrong CSRF token; reload the page and retry")

    async def invalid(request: Request, exc: Exception) -> Response:
        return _error(request, 422, str(exc))

    async def conflict(request: Request, exc: Exception) -> Response:
        # Not str(exc): it names the other faxbox, which may be another tenant's.
        number = getattr(exc, "number", "the number")
        return _error(request, 409, f"{number} is already assigned to another faxbox")

    async def bad_cursor(request: Request, exc: Exception) -> Response:
        return _error(request, 400, str(exc))

    async def too_many(request: Request, exc: TooManyFailures) -> Response:
        return _error(request, 429, exc.message, **{"Retry-After": str(exc.retry_after_s)})

    handlers: dict[type[Exception], Any] = {
        NotSignedIn: not_signed_in,
        NotFound: not_found,
        Forbidden: forbidden,
        CsrfFailed: csrf_failed,
        InvalidInput: invalid,
        NumberAlreadyAssigned: conflict,
        InvalidCursor: bad_cursor,
        TooManyFailures: too_many,
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)


def create_app(deps: PortalDeps) -> FastAPI:
    from faxbox.portal import api, pages  # routes need the helpers above

    app = FastAPI(
        title="Faxbox portal",
        version="1",
        description="Fax history, faxbox administration and the queue dashboard. "
        "Scripts authenticate with `Authorization: Bearer <API token>`.",
    )
    if deps.signin is None:
        deps = dataclasses.replace(deps, signin=SignInThrottle(deps.store.db))
    app.state.deps = deps
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(pages.router)
    return app
