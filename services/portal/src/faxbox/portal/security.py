"""Sessions, CSRF tokens and API tokens.

* The session cookie is an itsdangerous-signed, time-limited value holding the user id,
  the session's CSRF token and a fingerprint of the password hash: changing the
  password ends every existing session. HttpOnly, SameSite=Lax, Secure when configured.
* CSRF: a signed-in browser sends the session's token back with every state-changing
  request (form field ``csrf_token`` or header ``X-CSRF-Token``): a synchronizer token.
  Before sign-in there is no session, so the sign-in form uses a double-submit cookie.
  Requests authenticated with an API token carry no ambient credential and need none.
* API tokens are random 256-bit secrets shown once; only their SHA-256 is stored (a
  slow hash adds nothing for secrets of that entropy, and every API call checks one).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from pymongo import ASCENDING, IndexModel, ReturnDocument
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


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def password_fingerprint(user: User) -> str:
    return hashlib.sha256((user.password_hash or "").encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SessionData:
    user_id: str
    csrf: str
    fingerprint: str


class SessionSigner:
    def __init__(self, secret: str, max_age_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="faxbox.portal.session")
        self.max_age_s = max_age_s

    def dumps(self, data: SessionData) -> str:
        return self._serializer.dumps({"u": data.user_id, "c": data.csrf, "p": data.fingerprint})

    def loads(self, value: str) -> SessionData | None:
        try:
            raw = self._serializer.loads(value, max_age=self.max_age_s)
        except BadSignature:  # includes SignatureExpired
            return None
        if not isinstance(raw, dict):
            return None
        user_id, csrf, fingerprint = raw.get("u"), raw.get("c"), raw.get("p")
        if not all(isinstance(v, str) for v in (user_id, csrf, fingerprint)):
            return None
        return SessionData(str(user_id), str(csrf), str(fingerprint))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: the user, and how they authenticated."""

    user: User
    csrf: str | None  # None for API-token requests: they need no CSRF token
    token_id: str | None = None

    @property
    def role(self) -> Role:
        return self.user.role

    @property
    def is_admin(self) -> bool:
        return self.user.role in (Role.ACCOUNT_ADMIN, Role.RESELLER_ADMIN)


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: str
    user_id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None


def _token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _from_doc(doc: Doc) -> ApiToken:
    return ApiToken(
        id=doc["_id"],
        user_id=doc["user_id"],
        name=doc.get("name", ""),
        created_at=doc["created_at"],
        last_used_at=doc.get("last_used_at"),
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

    async def create(self, user_id: str, name: str) -> tuple[ApiToken, str]:
        """A new token; returns it with its secret, which is never shown again."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        doc = {
            "_id": new_id("tok"),
            "user_id": user_id,
            "name": name.strip()[:100],
            "hash": _token_hash(secret),
            "created_at": utc_now(),
            "last_used_at": None,
        }
        await self.collection.insert_one(doc)
        return _from_doc(doc), secret

    async def list(self, user_id: str) -> list[ApiToken]:
        cursor = self.collection.find({"user_id": user_id}).sort("created_at", ASCENDING)
        return [_from_doc(doc) async for doc in cursor]

    async def revoke(self, user_id: str, token_id: str) -> bool:
        """Delete one of the user's tokens; False if they have none with that id."""
        result = await self.collection.delete_one({"_id": token_id, "user_id": user_id})
        return result.deleted_count == 1

    async def authenticate(self, secret: str) -> ApiToken | None:
        if not secret.startswith(TOKEN_PREFIX):
            return None
        doc = await self.collection.find_one_and_update(
            {"hash": _token_hash(secret)},
            {"$set": {"last_used_at": utc_now()}},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else _from_doc(doc)
