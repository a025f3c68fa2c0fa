"""Signing in and out: password checks behind the sign-in limits, session cookies, and
the double-submit token of the sign-in form."""

from __future__ import annotations

from fastapi import Request, Response

from faxbox.portal.deps import PortalDeps
from faxbox.portal.security import (
    PRELOGIN_COOKIE,
    SESSION_COOKIE,
    SessionData,
    new_csrf_token,
    password_fingerprint,
    tokens_match,
)
from faxbox.portal.throttle import SignInThrottle
from faxbox.shared import passwords
from faxbox.shared.store import User


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
