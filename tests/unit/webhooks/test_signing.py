"""Signatures and sealed secrets, with the cryptography library's own checks."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import SecretStr

from faxbox.shared import signing
from faxbox.shared.secretbox import SecretBox, SecretKeyMissing, SecretSettings, SecretUnreadable

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


def test_a_sealed_signing_key_opens_only_with_the_key_and_its_account() -> None:
    box = SecretBox("a" * 32)
    private = base64.b64encode(signing.private_bytes(signing.new_private_key())).decode()
    sealed = box.seal(private, "webhook-signing-key:acc_1")
    assert sealed.startswith("sealed:v1:")
    assert private not in sealed
    assert box.open(sealed, "webhook-signing-key:acc_1") == private
    with pytest.raises(SecretUnreadable):
        box.open(sealed, "webhook-signing-key:acc_2")
    with pytest.raises(SecretUnreadable):
        SecretBox("b" * 32).open(sealed, "webhook-signing-key:acc_1")
    with pytest.raises(SecretUnreadable):
        box.open(sealed[:-4] + "AAAA", "webhook-signing-key:acc_1")
    assert box.seal("x", "p") != box.seal("x", "p")  # a fresh nonce each time


def test_no_secret_key_no_signing_key() -> None:
    with pytest.raises(SecretKeyMissing, match="FAXBOX_SECRET_KEY"):
        SecretSettings(secret_key=SecretStr("")).required_box("signing webhook deliveries")
