"""Signatures and sealed secrets, with the cryptography library's own checks."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from faxbox.shared import signing
from faxbox.shared.sealing import SealBroken, Sealer, SecretKeyMissing

BODY = b'{"id":"evt_1","type":"fax.delivered"}'


def test_a_signature_verifies_over_the_timestamp_and_the_exact_body() -> None:
    key = signing.new_private_key()
    public = signing.public_key_b64(key)
    signature = signing.sign(key, 1767225600, BODY)
    assert signing.verify(public, signature, 1767225600, BODY)
    assert not signing.verify(public, signature, 1767225601, BODY)
    assert not signing.verify(public, signature, 1767225600, BODY + b" ")
    other = signing.public_key_b64(signing.new_private_key())
    assert not signing.verify(other, signature, 1767225600, BODY)
    assert not signing.verify(public, "not base64!", 1767225600, BODY)


def test_the_pem_public_key_is_the_same_key() -> None:
    key = signing.new_private_key()
    loaded = load_pem_public_key(signing.public_key_pem(signing.public_key_b64(key)).encode())
    assert isinstance(loaded, Ed25519PublicKey)
    loaded.verify(base64.b64decode(signing.sign(key, 5, BODY)), signing.signed_message(5, BODY))


def test_sealed_values_open_only_with_the_key_and_purpose() -> None:
    sealer = Sealer("a" * 32)
    sealed = sealer.seal(b"secret bytes", "webhook-signing-key:acc_1")
    assert sealed.startswith("v1.")
    assert b"secret" not in sealed.encode()
    assert sealer.open(sealed, "webhook-signing-key:acc_1") == b"secret bytes"
    with pytest.raises(SealBroken):
        sealer.open(sealed, "webhook-signing-key:acc_2")
    with pytest.raises(SealBroken):
        Sealer("b" * 32).open(sealed, "webhook-signing-key:acc_1")
    with pytest.raises(SealBroken):
        sealer.open(sealed[:-4] + "AAAA", "webhook-signing-key:acc_1")
    assert sealer.seal(b"x", "p") != sealer.seal(b"x", "p")  # a fresh nonce each time


def test_no_secret_key_no_sealing() -> None:
    with pytest.raises(SecretKeyMissing, match="FAXBOX_SECRET_KEY"):
        Sealer("")
