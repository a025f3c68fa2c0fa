"""Who may send faxes from a faxbox, and whether the sender's address can be believed.

Authorization (the mission's rule): the From address must be the faxbox owner's email,
the owner's alternate notification address, or match the faxbox's permission list
(``user@example.com``, ``@example.com`` or ``example.com``; a domain entry matches that
exact domain, not its subdomains, which are often separate mail systems). Addresses
compare case-insensitively.

Authentication (optional per faxbox, ``require_authenticated_sender``): a From header is
trivially forged, so a faxbox may demand proof. Only ``Authentication-Results`` headers
(RFC 8601) stamped by one of our own authserv-ids are read (the receiving MTA removes
look-alikes arriving from outside, as RFC 8601 §5 requires); anything else in the mail
is the sender's own claim. Proof is ``dmarc=pass``, or ``spf=pass`` / ``dkim=pass`` for
a domain aligned with the From domain. Alignment here is the simple rule "the same
domain, or one a subdomain of the other" (with at least two labels each), which is
DMARC's relaxed alignment without a public-suffix list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from faxbox.shared.store import Faxbox, User


class MatchKind(IntEnum):
    """How a sender matched a faxbox; lower values win when several faxboxes match."""

    OWNER = 1
    ALTERNATE = 2
    PERMITTED_ADDRESS = 3
    PERMITTED_DOMAIN = 4


@dataclass(frozen=True, slots=True)
class Candidate:
    """A faxbox the sender might be sending from, with its owner."""

    faxbox: Faxbox
    owner: User


@dataclass(frozen=True, slots=True)
class SenderMatch:
    faxbox: Faxbox
    owner: User
    how: MatchKind


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def permission_match(entry: str, sender: str) -> MatchKind | None:
    entry = entry.strip().lower()
    sender = sender.strip().lower()
    if entry.startswith("@"):
        return MatchKind.PERMITTED_DOMAIN if _domain(sender) == entry[1:] else None
    if "@" in entry:
        return MatchKind.PERMITTED_ADDRESS if entry == sender else None
    return MatchKind.PERMITTED_DOMAIN if _domain(sender) == entry else None


def how_matches(candidate: Candidate, sender: str) -> MatchKind | None:
    sender = sender.strip().lower()
    if candidate.owner.email.lower() == sender:
        return MatchKind.OWNER
    alternate = candidate.owner.alternate_email
    if alternate is not None and alternate.lower() == sender:
        return MatchKind.ALTERNATE
    matches = [m for e in candidate.faxbox.permission_list if (m := permission_match(e, sender))]
    return min(matches) if matches else None


def match_sender(sender: str, candidates: Iterable[Candidate]) -> SenderMatch | None:
    """The faxbox this sender sends from: the closest match, enabled ones first."""
    found = [
        SenderMatch(c.faxbox, c.owner, how)
        for c in candidates
        if (how := how_matches(c, sender)) is not None
    ]
    if not found:
        return None
    return min(found, key=lambda m: (m.how, not m.faxbox.enabled, m.faxbox.id))


# --- Authentication-Results (RFC 8601) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthResult:
    method: str
    result: str
    properties: dict[str, str]


@dataclass(frozen=True, slots=True)
class AuthResults:
    authserv_id: str
    results: tuple[AuthResult, ...]


def _strip_comments(value: str) -> str:
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for ch in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            if depth == 0:
                out.append(ch)
            continue
        if ch == '"' and depth == 0:
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
            continue
        elif not quoted and ch == ")" and depth > 0:
            depth -= 1
            continue
        if depth == 0:
            out.append(ch)
    return "".join(out)


def _split_outside_quotes(value: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_authentication_results(value: str) -> AuthResults | None:
    """One header's value; None if it has no authserv-id."""
    segments = [s.strip() for s in _split_outside_quotes(_strip_comments(value), ";")]
    if not segments or not segments[0]:
        return None
    authserv_id = segments[0].split()[0].lower()
    results: list[AuthResult] = []
    for segment in segments[1:]:
        tokens = segment.split()
        if not tokens or "=" not in tokens[0]:
            continue  # "none", or something unreadable
        method, _, result = tokens[0].partition("=")
        properties: dict[str, str] = {}
        for token in tokens[1:]:
            key, eq, prop = token.partition("=")
            if eq:
                properties[key.lower()] = prop.strip('"').lower()
        results.append(
            AuthResult(method.split("/")[0].lower(), result.strip('"').lower(), properties)
        )
    return AuthResults(authserv_id, tuple(results))


def aligned(domain: str, from_domain: str) -> bool:
    domain, from_domain = domain.lower().strip("."), from_domain.lower().strip(".")
    if "." not in domain or "." not in from_domain:
        return False
    return (
        domain == from_domain
        or from_domain.endswith("." + domain)
        or domain.endswith("." + from_domain)
    )


def _result_proves(result: AuthResult, from_domain: str) -> bool:
    if result.result != "pass":
        return False
    props = result.properties
    if result.method == "dmarc":
        header_from = props.get("header.from")
        return header_from is None or aligned(header_from, from_domain)
    if result.method == "spf":
        mailfrom = props.get("smtp.mailfrom")
        return mailfrom is not None and aligned(_domain(mailfrom), from_domain)
    if result.method == "dkim":
        signer = props.get("header.d") or (
            _domain(props["header.i"]) if "header.i" in props else None
        )
        return signer is not None and aligned(signer, from_domain)
    return False


def sender_authenticated(
    from_domain: str | None, headers: Iterable[str], trusted_authserv_ids: Iterable[str]
) -> bool:
    """True if a trusted Authentication-Results header proves the From domain."""
    if not from_domain:
        return False
    trusted = {t.strip().lower() for t in trusted_authserv_ids}
    for value in headers:
        parsed = parse_authentication_results(value)
        if parsed is None or parsed.authserv_id not in trusted:
            continue
        if any(_result_proves(r, from_domain) for r in parsed.results):
            return True
    return False
