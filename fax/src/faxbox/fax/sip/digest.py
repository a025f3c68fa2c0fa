"""SIP digest authentication (RFC 2617, RFC 8760 for SIP; MD5 and MD5-sess, qop=auth).

The client side answers a 401/407 challenge (``answer_challenge``); the server side
checks an Authorization header against the credentials it expects
(``authorization_matches``), with the nonce bookkeeping left to the caller.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Container
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faxbox.fax.sip.message import SipResponse


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """``Digest realm="x", nonce="y", qop="auth"`` → ("Digest", {...}), names lower-cased."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    for match in re.finditer(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)', rest):
        raw = match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[match.group(1).lower()] = raw
    return scheme, params


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def digest_authorization(
    challenge: str,
    credentials: Credentials,
    method: str,
    uri: str,
    *,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization/Proxy-Authorization value answering a Digest challenge."""
    scheme, params = parse_auth_params(challenge)
    if scheme.lower() != "digest":
        raise ValueError(f"unsupported authentication scheme {scheme!r}")
    algorithm = params.get("algorithm", "MD5")
    if algorithm.upper() not in ("MD5", "MD5-SESS"):
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    realm = params.get("realm", "")
    nonce = params.get("nonce", "")
    qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in qops else None
    if qops and qop is None:
        raise ValueError(f"unsupported qop {params['qop']!r}")
    cnonce = cnonce or secrets.token_hex(8)
    ha1 = _md5(f"{credentials.username}:{realm}:{credentials.password}")
    if algorithm.upper() == "MD5-SESS":
        ha1 = _md5(f"{ha1}:{nonce}:{cnonce}")
    ha2 = _md5(f"{method}:{uri}")
    nc_text = f"{nc:08x}"
    if qop:
        response = _md5(f"{ha1}:{nonce}:{nc_text}:{cnonce}:{qop}:{ha2}")
    else:
        response = _md5(f"{ha1}:{nonce}:{ha2}")
    fields = [
        f'username="{credentials.username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        f'response="{response}"',
        f"algorithm={algorithm}",
    ]
    if "opaque" in params:
        fields.append(f'opaque="{params["opaque"]}"')
    if qop:
        fields += [f"qop={qop}", f"nc={nc_text}", f'cnonce="{cnonce}"']
    return "Digest " + ", ".join(fields)


def answer_challenge(
    response: SipResponse, credentials: Credentials, method: str, uri: str
) -> tuple[str, str] | None:
    """The header answering the Digest challenge of a 401 (Authorization) or a 407
    (Proxy-Authorization) to ``method`` on ``uri``; None when it carries no challenge.
    Raises ValueError for a challenge we cannot answer."""
    challenged = response.status == 401
    challenge = response.headers.get("WWW-Authenticate" if challenged else "Proxy-Authenticate")
    if challenge is None:
        return None
    name = "Authorization" if challenged else "Proxy-Authorization"
    return name, digest_authorization(challenge, credentials, method, uri)


def digest_challenge(realm: str, nonce: str) -> str:
    """The WWW-Authenticate/Proxy-Authenticate value a server sends with 401/407."""
    return f'Digest realm="{realm}", nonce="{nonce}", algorithm=MD5, qop="auth"'


def authorization_matches(
    header: str, credentials: Credentials, method: str, *, realm: str, nonces: Container[str]
) -> bool:
    """Whether ``header`` (Authorization) answers one of our ``nonces`` for ``realm`` with
    ``credentials``: recomputed from its own uri, nc and cnonce, compared in constant time."""
    scheme, params = parse_auth_params(header)
    nonce = params.get("nonce", "")
    if scheme.lower() != "digest" or nonce not in nonces:
        return False
    if params.get("username") != credentials.username or params.get("realm") != realm:
        return False
    challenge = f'Digest realm="{realm}", nonce="{nonce}", algorithm=MD5'
    if "qop" in params:
        challenge += f', qop="{params["qop"]}"'
    try:
        expected = digest_authorization(
            challenge,
            credentials,
            method,
            params.get("uri", ""),
            nc=int(params.get("nc", "1"), 16),
            cnonce=params.get("cnonce"),
        )
    except ValueError:
        return False
    _, want = parse_auth_params(expected)
    return secrets.compare_digest(want["response"], params.get("response", ""))
