"""Secrets kept in the database (carrier SIP passwords, each account's webhook signing
key), sealed with ``FAXBOX_SECRET_KEY``.

AES-256-GCM with a key derived from the setting (SHA-256 of it, so any long random
string will do), a fresh 96-bit nonce per value, and the value's purpose (e.g.
``carrier:<id>:sip_password``) as associated data: a sealed value copied into another
carrier's document does not open there. Stored form: ``sealed:v1:<base64 nonce+ciphertext>``.

The key never reaches the database, so a copy of the database (a backup, a replica, a
``mongodump``) does not give away the carriers' passwords or the webhook signing keys.
Changing the key makes the sealed values unreadable: set each password again
(``faxbox carrier set-password``); a signing key that no longer opens must be removed
(its account then gets a new pair, and receivers the new public key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import Field, SecretStr

from faxbox.shared.settings import FaxboxSettings

PREFIX = "sealed:v1:"
MIN_KEY_LENGTH = 32
_NONCE_BYTES = 12


class SecretKeyMissing(RuntimeError):
    """A sealed value must be opened or made, and FAXBOX_SECRET_KEY is not set."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} needs FAXBOX_SECRET_KEY (a random string of at least {MIN_KEY_LENGTH} "
            "characters, the same for every service and the faxbox command)"
        )


class SecretUnreadable(ValueError):
    """A sealed value does not open with this key (another key, or altered)."""


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


class SecretBox:
    def __init__(self, key: str) -> None:
        if len(key) < MIN_KEY_LENGTH:
            raise ValueError(
                f"FAXBOX_SECRET_KEY must have at least {MIN_KEY_LENGTH} characters "
                f"(it has {len(key)}), e.g. the output of "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        self._aead = AESGCM(hashlib.sha256(key.encode()).digest())

    def seal(self, plaintext: str, purpose: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), purpose.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str, purpose: str) -> str:
        if not is_sealed(stored):
            raise SecretUnreadable("not a sealed value")
        try:
            raw = base64.b64decode(stored[len(PREFIX) :], validate=True)
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], purpose.encode())
        except (binascii.Error, InvalidTag, ValueError):
            raise SecretUnreadable(
                f"the sealed {purpose} does not open with this FAXBOX_SECRET_KEY "
                "(sealed with another key, or altered); set it again"
            ) from None
        return plain.decode()


class SecretSettings(FaxboxSettings):
    secret_key: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Seals secrets stored in the database (carrier passwords, webhook signing "
            "keys); the same everywhere, and kept out of the database's backups."
        ),
    )

    def box(self) -> SecretBox | None:
        key = self.secret_key.get_secret_value()
        return SecretBox(key) if key else None

    def required_box(self, what: str) -> SecretBox:
        """The box, or ``SecretKeyMissing`` naming ``what`` needs it."""
        box = self.box()
        if box is None:
            raise SecretKeyMissing(what)
        return box
