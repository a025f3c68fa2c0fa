"""Webhook signatures: Ed25519 over ``timestamp + "." + raw body``.

Each account has its own key pair (``faxbox.shared.store.signing_keys``); the public key
is shown in the portal and a receiver checks every request with it:

    Faxbox-Timestamp: 1767225600
    Faxbox-Signature: <base64 of the 64-byte Ed25519 signature>

The signed message is the timestamp's decimal digits, a ``.``, then the request body
exactly as received (bytes, before any JSON parsing). Including the timestamp lets a
receiver refuse old requests (five minutes is the advice in docs/api.md), so a captured
request cannot be replayed later; the event id in the body lets it drop duplicates.
"""

from __future__ import annotations

import base64
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

SIGNATURE_HEADER: Final = "Faxbox-Signature"
TIMESTAMP_HEADER: Final = "Faxbox-Timestamp"


def signed_message(timestamp: int, body: bytes) -> bytes:
    return f"{timestamp}.".encode() + body


def sign(private_key: Ed25519PrivateKey, timestamp: int, body: bytes) -> str:
    return base64.b64encode(private_key.sign(signed_message(timestamp, body))).decode()


def verify(public_key_b64: str, signature_b64: str, timestamp: int, body: bytes) -> bool:
    """True when the signature is the account's over this timestamp and body."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
        key.verify(base64.b64decode(signature_b64), signed_message(timestamp, body))
    except (InvalidSignature, ValueError):
        return False
    return True


def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def private_key_of(raw: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The public key as receivers configure it: base64 of its 32 raw bytes."""
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def public_key_pem(public_b64: str) -> str:
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64))
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
