"""Who may send faxes from a faxbox, and whether the sender's address can be believed.

Authorization (the mission's rule): the From address must be the faxbox owner's email,
the owner's alternate notification address, or match the faxbox's permission list
(``user@example.com``, ``@example.com`` or ``example.com``; a domain entry matches that
exact domain, not its subdomains, which are often separate mail systems). Addresses
compare case-insensitively.

Authentication (per faxbox ``sender_auth``, ``required`` by default): a From header is
trivially forged, so the sender must be proven by a mail server we trust. Only
``Authentication-Results`` headers (RFC 8601) whose authserv-id is exactly one of ours
(``FAXBOX_VALIDATOR_AUTHSERV_IDS``; ``mx.example.evil.example`` is not
``mx.example``) are read, and of those only the **topmost**: our server adds its header
above everything the mail arrived with, so any header below it, whatever id it claims,
may have been written by the sender (RFC 8601 §5). Proof, in that one header, is any of:

- ``dmarc=pass`` with ``header.from`` equal to From's domain;
- ``dkim=pass`` whose ``header.d`` is From's domain or a parent of it;
- ``spf=pass`` whose ``smtp.mailfrom`` domain is From's domain or a parent of it;
- ``auth=pass`` whose ``smtp.auth`` is the From address itself (the sender logged in to
  our submission server as that user).

"A parent" needs at least two labels (``example.com`` for ``mail.example.com``; never
``com``): a public-suffix list is not needed for that, because a pass for ``co.uk``
would take control of ``co.uk``'s DNS.
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


def _is_or_parent_of(domain: str, from_domain: str) -> bool:
    domain, from_domain = domain.lower().strip("."), from_domain.lower().strip(".")
    if "." not in domain:
        return False
    return from_domain == domain or from_domain.endswith("." + domain)


def _result_proves(result: AuthResult, sender: str) -> bool:
    if result.result != "pass":
        return False
    props = result.properties
    from_domain = _domain(sender)
    if result.method == "dmarc":
        return props.get("header.from", "").strip(".") == from_domain
    if result.method == "dkim":
        signer = props.get("header.d") or (
            _domain(props["header.i"]) if "header.i" in props else None
        )
        return signer is not None and _is_or_parent_of(signer, from_domain)
    if result.method == "spf":
        mailfrom = props.get("smtp.mailfrom")
        return bool(mailfrom) and _is_or_parent_of(_domain(mailfrom or ""), from_domain)
    if result.method == "auth":
        return props.get("smtp.auth", "") == sender
    return False


@dataclass(frozen=True, slots=True)
class SenderProof:
    """What the trusted mail server said about the sender."""

    proven: bool
    header: AuthResults | None  # the topmost header of a trusted server, if any
    proof: AuthResult | None = None  # the result that proved it

    def found(self) -> str:
        """The results read, in words ("dmarc=fail, spf=softfail"), or that there were none."""
        if self.header is None:
            return ""
        results = [f"{r.method}={r.result}" for r in self.header.results]
        return ", ".join(results) if results else "no results"


def prove_sender(
    sender: str | None, headers: Iterable[str], trusted_authserv_ids: Iterable[str]
) -> SenderProof:
    """Whether our topmost trusted Authentication-Results header proves ``sender``."""
    trusted = {t.strip().lower() for t in trusted_authserv_ids}
    topmost: AuthResults | None = None
    for value in headers:  # in the order they appear: top first
        parsed = parse_authentication_results(value)
        if parsed is not None and parsed.authserv_id in trusted:
            topmost = parsed
            break
    if topmost is None or not sender or "@" not in sender:
        return SenderProof(False, topmost)
    sender = sender.strip().lower()
    for result in topmost.results:
        if _result_proves(result, sender):
            return SenderProof(True, topmost, result)
    return SenderProof(False, topmost)
