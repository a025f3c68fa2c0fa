"""Signing in and out: password checks behind the sign-in limits, session cookies, and
the double-submit token of the sign-in form.

Argon2 verification takes tens of milliseconds of CPU on purpose; it runs in a worker
thread so one sign-in never stalls every other request of the event loop.
"""

from __future__ import annotations

import asyncio

from fastapi import Request, Response

from faxbox.portal.deps import PortalDeps
from faxbox.portal.security import PRELOGIN_COOKIE, SESSION_COOKIE, new_csrf_token, tokens_match
from faxbox.portal.throttle import SignInThrottle
from faxbox.shared import passwords
from faxbox.shared.store import User


async def authenticate_password(deps: PortalDeps, email: str, password: str) -> User | None:
    user = await deps.store.find_user_by_email(email)
    stored = user.password_hash if user else None
    if not await asyncio.to_thread(passwords.verify_password, stored, password):
        return None
    if user is None or user.password_hash is None:
        return None
    if passwords.needs_rehash(user.password_hash):
        rehashed = await asyncio.to_thread(passwords.hash_password, password)
        user = await deps.store.set_password_hash(user.id, rehashed)
    return user


def client_address(request: Request, deps: PortalDeps) -> str:
    return deps.proxies.client(request)


async def throttled_sign_in(
    request: Request, deps: PortalDeps, email: str, password: str
) -> User | None:
    """authenticate_password behind the sign-in limits (TooManyFailures when over)."""
    throttle = deps.signin or SignInThrottle(deps.store.db)
    attempt = await throttle.begin(email, client_address(request, deps))
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


async def start_session(response: Response, deps: PortalDeps, user: User) -> str:
    """A new server-side session and its cookie; returns the session's CSRF token."""
    session, secret = await deps.sessions.start(user)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=deps.sessions.max_age_s,
        httponly=True,
        samesite="lax",
        secure=deps.cookie_secure,
        path="/",
    )
    response.delete_cookie(PRELOGIN_COOKIE, path="/")
    return session.csrf


async def end_session(response: Response, deps: PortalDeps, session_id: str | None) -> None:
    if session_id is not None:
        await deps.sessions.end(session_id)
    response.delete_cookie(SESSION_COOKIE, path="/")


async def change_password(deps: PortalDeps, user: User, current: str, new: str) -> User | None:
    """Set a new password if ``current`` is right; None if it is not.

    Every session and API token of the user ends with the old password (their
    fingerprints no longer match); the caller starts a new session for this browser.
    """
    if not await asyncio.to_thread(passwords.verify_password, user.password_hash, current):
        return None
    hashed = await asyncio.to_thread(passwords.hash_password, new)
    changed = await deps.store.set_password_hash(user.id, hashed)
    await deps.sessions.end_all(user.id)
    return changed


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
