"""Password hashing for portal sign-in: argon2id through argon2-cffi.

One place so the CLI (``faxbox user set-password``) and the portal hash and verify
with the same parameters.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 8
MAX_LENGTH = 1024  # argon2 takes any length; a cap keeps a huge body from costing CPU

_HASHER = PasswordHasher()

# Verifying against this when a user does not exist takes as long as a real check, so
# response times do not tell which addresses have accounts.
_DUMMY_HASH = _HASHER.hash("not-a-real-password")


def hash_password(password: str) -> str:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValueError(
            f"a password needs {MIN_LENGTH} to {MAX_LENGTH} characters, not {len(password)}"
        )
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; a missing hash never matches (but costs the same)."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than the current ones."""
    return _HASHER.check_needs_rehash(password_hash)
