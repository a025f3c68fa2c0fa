"""Each account's webhook signing key pair, the private half sealed (``faxbox.shared.secretbox``).

``webhook_signing_keys``: one document per account, ``_id`` = the account id. The pair
is made the first time anyone needs it (the portal showing the public key, or the
webhooks service signing a first delivery); making it is the insert of that ``_id``, so
two processes racing to make it end with one pair, and both use that one.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from faxbox.shared import signing
from faxbox.shared.secretbox import SecretBox
from faxbox.shared.store.models import utc_now

Doc = dict[str, Any]

COLLECTION: Final = "webhook_signing_keys"
_PURPOSE: Final = "webhook-signing-key"


@dataclass(frozen=True, slots=True)
class AccountKey:
    account_id: str
    public_key: str  # base64 of the 32 raw bytes
    created_at: datetime

    @property
    def pem(self) -> str:
        return signing.public_key_pem(self.public_key)


class SigningKeys:
    def __init__(self, db: AsyncDatabase[Doc], box: SecretBox) -> None:
        self.collection: AsyncCollection[Doc] = db[COLLECTION]
        self._box = box
        self._private: dict[str, Ed25519PrivateKey] = {}

    async def _doc(self, account_id: str) -> Doc:
        doc = await self.collection.find_one({"_id": account_id})
        if doc is not None:
            return doc
        key = signing.new_private_key()
        doc = {
            "_id": account_id,
            "public_key": signing.public_key_b64(key),
            "private_key_sealed": self._box.seal(
                base64.b64encode(signing.private_bytes(key)).decode(), f"{_PURPOSE}:{account_id}"
            ),
            "algorithm": "ed25519",
            "created_at": utc_now(),
        }
        try:
            await self.collection.insert_one(doc)
        except DuplicateKeyError:
            existing = await self.collection.find_one({"_id": account_id})
            if existing is None:
                raise
            return existing
        return doc

    async def public(self, account_id: str) -> AccountKey:
        """The account's public key, made now if it has none yet."""
        doc = await self._doc(account_id)
        return AccountKey(account_id, str(doc["public_key"]), doc["created_at"])

    async def private(self, account_id: str) -> Ed25519PrivateKey:
        """The account's private key (opened once per process, then kept)."""
        key = self._private.get(account_id)
        if key is None:
            doc = await self._doc(account_id)
            sealed = str(doc["private_key_sealed"])
            key = signing.private_key_of(
                base64.b64decode(self._box.open(sealed, f"{_PURPOSE}:{account_id}"))
            )
            self._private[account_id] = key
        return key
