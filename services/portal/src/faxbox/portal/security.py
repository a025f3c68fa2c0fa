"""Sessions, CSRF tokens and API tokens.

* Sessions live on the server (``portal_sessions``): the cookie holds a random 256-bit
  secret, the database only its SHA-256 (the document's ``_id``, so every request is one
  lookup by ``_id``), with the user, the session's CSRF token, a fingerprint of the
  password hash and the expiry. Signing out deletes the document, so a copied cookie
  stops working at once; "sign out everywhere" deletes all of the user's; a password
  changed anywhere (portal or ``faxbox user set-password``) no longer matches the
  fingerprint, and the session is deleted the next time it is presented. Cookie:
  HttpOnly, SameSite=Lax, Secure when configured.
* CSRF: a signed-in browser sends the session's token back with every state-changing
  request (form field ``csrf_token`` or header ``X-CSRF-Token``): a synchronizer token.
  Before sign-in there is no session, so the sign-in form uses a double-submit cookie.
  Requests authenticated with an API token carry no ambient credential and need none.
* API tokens are random 256-bit secrets shown once; only their SHA-256 is stored (a
  slow hash adds nothing for secrets of that entropy, and every API call checks one).
  Each has a scope (``read``: GET requests only; ``send``: also send, cancel and resend
  faxes; ``admin``: everything its user may do)
  and an expiry, and carries the password fingerprint of its creation: a token stops
  working (and is deleted) once its user's password changes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from faxbox.shared.store import Role, User, new_id
from faxbox.shared.store.models import utc_now

Doc = dict[str, Any]

SESSION_COOKIE = "faxbox_session"
PRELOGIN_COOKIE = "faxbox_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
TOKEN_PREFIX = "fbt_"
DEFAULT_TOKEN_DAYS = 90
MAX_TOKEN_DAYS = 365
# Tokens made before scopes and expiry existed: what they could do, for this long.
_LEGACY_TOKEN_DAYS = DEFAULT_TOKEN_DAYS


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def password_fingerprint(user: User) -> str:
    return hashlib.sha256((user.password_hash or "").encode()).hexdigest()[:16]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenScope(StrEnum):
    """What an API token may do; each scope includes the ones before it."""

    READ = "read"  # GET requests only
    SEND = "send"  # also send, cancel and resend faxes
    ADMIN = "admin"  # everything its user may do

    def covers(self, needed: TokenScope) -> bool:
        order = list(TokenScope)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: the user, and how they authenticated."""

    user: User
    csrf: str | None  # None for API-token requests: they need no CSRF token
    token_id: str | None = None
    scope: TokenScope = TokenScope.ADMIN
    session_id: str | None = None

    @property
    def role(self) -> Role:
        return self.user.role

    @property
    def is_admin(self) -> bool:
        return self.user.role in (Role.ACCOUNT_ADMIN, Role.RESELLER_ADMIN, Role.PLATFORM_ADMIN)

    @property
    def is_platform_admin(self) -> bool:
        return self.user.role is Role.PLATFORM_ADMIN

    @property
    def manages_accounts(self) -> bool:
        """May add numbers to accounts and widen their countries (reseller or platform)."""
        return self.user.role in (Role.RESELLER_ADMIN, Role.PLATFORM_ADMIN)


# --- sessions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user_id: str
    csrf: str
    fingerprint: str
    expires_at: datetime


class SessionStore:
    """Server-side sessions in the portal's own ``portal_sessions`` collection."""

    def __init__(self, db: AsyncDatabase[Doc], max_age_s: int) -> None:
        self.collection: AsyncCollection[Doc] = db["portal_sessions"]
        self.max_age_s = max_age_s

    async def ensure_indexes(self) -> None:
        await self.collection.create_indexes([IndexModel([("user_id", ASCENDING)], name="user_id")])

    async def start(self, user: User) -> tuple[Session, str]:
        """A new session; returns it with the cookie's secret."""
        secret = secrets.token_urlsafe(32)
        now = utc_now()
        session = Session(
            id=_digest(secret),
            user_id=user.id,
            csrf=new_csrf_token(),
            fingerprint=password_fingerprint(user),
            expires_at=now + timedelta(seconds=self.max_age_s),
        )
        await self.collection.insert_one(
            {
                "_id": session.id,
                "user_id": session.user_id,
                "csrf": session.csrf,
                "fingerprint": session.fingerprint,
                "created_at": now,
                "expires_at": session.expires_at,
            }
        )
        # No TTL indexes on FerretDB v1: sessions that ran out go when others begin.
        await self.collection.delete_many({"user_id": user.id, "expires_at": {"$lte": now}})
        return session, secret

    async def find(self, secret: str) -> Session | None:
        if not secret or len(secret) > 200:
            return None
        doc = await self.collection.find_one({"_id": _digest(secret)})
        if doc is None:
            return None
        if doc["expires_at"] <= utc_now():
            await self.collection.delete_one({"_id": doc["_id"]})
            return None
        return Session(
            doc["_id"], doc["user_id"], doc["csrf"], doc["fingerprint"], doc["expires_at"]
        )

    async def end(self, session_id: str) -> None:
        await self.collection.delete_one({"_id": session_id})

    async def end_all(self, user_id: str) -> int:
        result = await self.collection.delete_many({"user_id": user_id})
        return result.deleted_count


# --- API tokens -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: str
    user_id: str
    name: str
    scope: TokenScope
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    fingerprint: str | None


def _from_doc(doc: Doc) -> ApiToken:
    created: datetime = doc["created_at"]
    return ApiToken(
        id=doc["_id"],
        user_id=doc["user_id"],
        name=doc.get("name", ""),
        scope=TokenScope(doc.get("scope", TokenScope.ADMIN)),
        created_at=created,
        expires_at=doc.get("expires_at") or created + timedelta(days=_LEGACY_TOKEN_DAYS),
        last_used_at=doc.get("last_used_at"),
        fingerprint=doc.get("fingerprint"),
    )


class TokenStore:
    """API tokens in the portal's own ``api_tokens`` collection."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection: AsyncCollection[Doc] = db["api_tokens"]

    async def ensure_indexes(self) -> None:
        # One index per command: FerretDB v1 crashes on several existing ones at once.
        for index in (
            IndexModel([("hash", ASCENDING)], name="hash_unique", unique=True),
            IndexModel([("user_id", ASCENDING)], name="user_id"),
        ):
            await self.collection.create_indexes([index])

    async def create(
        self,
        user: User,
        name: str,
        scope: TokenScope = TokenScope.READ,
        days: int = DEFAULT_TOKEN_DAYS,
    ) -> tuple[ApiToken, str]:
        """A new token; returns it with its secret, which is never shown again."""
        if not 1 <= days <= MAX_TOKEN_DAYS:
            raise ValueError(f"a token lasts 1 to {MAX_TOKEN_DAYS} days, not {days}")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = utc_now()
        doc = {
            "_id": new_id("tok"),
            "user_id": user.id,
            "name": name.strip()[:100],
            "scope": scope.value,
            "hash": _digest(secret),
            "fingerprint": password_fingerprint(user),
            "created_at": now,
            "expires_at": now + timedelta(days=days),
            "last_used_at": None,
        }
        await self.collection.insert_one(doc)
        return _from_doc(doc), secret

    async def list(self, user: User) -> list[ApiToken]:
        """The user's tokens still in force (expired or revoked ones are deleted here)."""
        cursor = self.collection.find({"user_id": user.id}).sort("created_at", ASCENDING)
        now = utc_now()
        alive = []
        for token in [_from_doc(doc) async for doc in cursor]:
            if token.expires_at > now and await self.still_valid_for(token, user):
                alive.append(token)
            elif token.expires_at <= now:
                await self.collection.delete_one({"_id": token.id})
        return alive

    async def revoke(self, user_id: str, token_id: str) -> bool:
        """Delete one of the user's tokens; False if they have none with that id."""
        result = await self.collection.delete_one({"_id": token_id, "user_id": user_id})
        return result.deleted_count == 1

    async def authenticate(self, secret: str) -> ApiToken | None:
        """The token with this secret, if it has not expired (its user is checked apart)."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        doc = await self.collection.find_one({"hash": _digest(secret)})
        if doc is None:
            return None
        token = _from_doc(doc)
        now = utc_now()
        if token.expires_at <= now:
            await self.collection.delete_one({"_id": token.id})
            return None
        await self.collection.update_one({"_id": token.id}, {"$set": {"last_used_at": now}})
        return token

    async def still_valid_for(self, token: ApiToken, user: User) -> bool:
        """False (and the token deleted) once the user's password changed since it was made."""
        current = password_fingerprint(user)
        if token.fingerprint is None:
            # Made before tokens remembered the password: from now on they do.
            await self.collection.update_one({"_id": token.id}, {"$set": {"fingerprint": current}})
            return True
        if tokens_match(token.fingerprint, current):
            return True
        await self.collection.delete_one({"_id": token.id})
        return False
