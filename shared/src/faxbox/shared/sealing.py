"""Secrets kept in the database, sealed with ``FAXBOX_SECRET_KEY`` (AES-256-GCM).

A database dump or backup alone must not give away what it holds: each account's
webhook signing key is stored sealed, and only a process with the secret key can use
it. The key for AES is derived from the setting with HKDF-SHA256, so any string of
enough entropy will do (``openssl rand -base64 32``). Each sealed value names what it
is for (``purpose``, authenticated with it): a value copied into another field does
not open there.

Sealed values read ``v1.<base64url of nonce and ciphertext>``; the version leaves room
to rotate the scheme or the key later.
"""

from __future__ import annotations

import base64
import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION: Final = "v1"
_NONCE_BYTES: Final = 12
MIN_SECRET_LENGTH: Final = 16


class SecretKeyMissing(RuntimeError):
    """``FAXBOX_SECRET_KEY`` is not set (or too short): nothing can be sealed or opened."""


class SealBroken(ValueError):
    """The value was not sealed with this key for this purpose, or was changed."""


class Sealer:
    def __init__(self, secret_key: str) -> None:
        if len(secret_key) < MIN_SECRET_LENGTH:
            raise SecretKeyMissing(
                "FAXBOX_SECRET_KEY is not set (or shorter than "
                f"{MIN_SECRET_LENGTH} characters): set the same random value for every "
                "service, e.g. the output of `openssl rand -base64 32`"
            )
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"faxbox-sealing", info=b"v1").derive(
            secret_key.encode()
        )
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, purpose: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, purpose.encode())
        return f"{_VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, token: str, purpose: str) -> bytes:
        version, _, body = token.partition(".")
        if version != _VERSION or not body:
            raise SealBroken(f"not a sealed value of version {_VERSION}")
        try:
            raw = base64.urlsafe_b64decode(body)
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], purpose.encode())
        except (InvalidTag, ValueError):
            raise SealBroken("the sealed value does not open with this FAXBOX_SECRET_KEY") from None
